"""A real Apache Kafka broker (3.9, single-node KRaft) for the end-to-end tests.

The Python twin of tests/testing/kafka.h: the same broker, configured the same way.

    broker = KafkaBroker(tmp_path / "kafka").start()   # free ports, fresh data, waits until served
    broker.create_topic("telemetry.raw", partitions=3)
    run kcat or iotd against broker.bootstrap           # "127.0.0.1:PORT"
    broker.kill(); broker.restart()                     # same ports, same data, waits again
    broker.stop()                                       # SIGTERM, SIGKILL after 10 s

The jars are $KAFKA_LIBS, else where `scripts/kafka.sh build` puts them; missing jars fail the
test (never skip it), saying how to fetch them. The broker's log is `root/kafka.log`, and every
error carries its tail. The process dies with the test process (PR_SET_PDEATHSIG).

Readiness is a metadata request answered by the broker with every partition led (asked with kcat,
Debian's Kafka client), not a log line: after a restart the broker answers before its partitions
are led again.
"""
import base64
import ctypes
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
KCAT = "/usr/bin/kcat"
NODE_ID = 1

# A small heap, and the flags that start the JVM fastest on two cores (serial GC and C1 only:
# ~1.6 s to a serving broker instead of ~1.9 s, 140 MB RSS instead of 190 MB). No perf-data file,
# which a SIGKILL would leave behind in /tmp; exit on OOM instead of limping.
JVM_FLAGS = ["-Xms64m", "-Xmx320m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
             "-XX:-UsePerfData", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]
TOOL_JVM_FLAGS = ["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData"]


def kafka_libs():
    """The directory of Kafka's jars: $KAFKA_LIBS, else where scripts/kafka.sh fetches them. Missing
    jars fail the test (never skip it), saying how to fetch them."""
    path = os.environ.get("KAFKA_LIBS") or subprocess.run(
        [str(ROOT / "scripts/kafka.sh"), "path"], capture_output=True, text=True,
        check=True).stdout.strip()
    if not list(pathlib.Path(path).glob("kafka_2.13-*.jar")):
        pytest.fail(f"Kafka's jars not found in {path!r}: run `scripts/kafka.sh build` (needs Java "
                    "and Maven) or set KAFKA_LIBS", pytrace=False)
    return path


def java_binary():
    """$JAVA_HOME/bin/java, else the java on PATH; none fails the test."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    java = shutil.which("java")
    if java is None:
        pytest.fail("java not found in $JAVA_HOME/bin or on PATH: the Kafka broker needs a Java "
                    "runtime (17 or later); run scripts/install-deps.sh", pytrace=False)
    return java


def free_ports(n):
    """n distinct ports that were free on 127.0.0.1 a moment ago (bound together, then closed)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster_id():
    """A random Kafka Uuid as Kafka prints it; like Kafka's, never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Runs in the child between fork and exec: the broker gets SIGKILL when pytest goes away.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def can_connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class KafkaBroker:
    """One Kafka broker (broker and KRaft controller in one process, node 1) on 127.0.0.1, its data
    in `root/data/`. start() picks free ports the first time; restart() keeps ports and data.
    Topics are never created automatically; everything is replicated once, so acks=all works."""

    def __init__(self, root, secure=None):
        """`secure`: also serve a SASL_SSL listener (SASL/PLAIN over TLS), for the tests of
        KAFKA_CONFIG's security settings: {"keystore": a PEM file with the PKCS#8 private key and
        the certificate chain, "users": {name: password}}. Its port is `secure_port`; the
        PLAINTEXT listener stays for the broker itself and the harness's checks."""
        self.root = pathlib.Path(root)
        self.data = self.root / "data"
        self.log_path = self.root / "kafka.log"
        self.proc = None
        self.port = 0
        self.controller_port = 0
        self.secure = secure
        self.secure_port = 0

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self):
        """The running broker's process id, or None while stopped."""
        return self.proc.pid if self.running else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=60):
        """Starts the broker: on fresh ports and data the first time, else like restart()."""
        if self.port:
            return self.restart(timeout)
        self.root.mkdir(parents=True, exist_ok=True)
        # The ports were free a moment ago; another process may take one before the broker binds
        # it. Then the broker exits at once, and a fresh pair is tried.
        for attempt in range(3):
            self.port, self.controller_port, self.secure_port = free_ports(3)
            self._format()
            try:
                return self._launch(timeout)
            except AssertionError:
                if attempt == 2 or "Address already in use" not in self.tail():
                    raise
        raise AssertionError("unreachable")

    def stop(self, timeout=10):
        """Ends the broker gracefully (SIGTERM, SIGKILL after `timeout`); data and ports stay."""
        if not self.running:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        """Ends the broker with SIGKILL, as a crash would; data and ports stay."""
        if self.running:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def restart(self, timeout=60):
        """Stops the broker if it runs, then starts it on the same ports and data."""
        self.stop()
        return self._launch(timeout)

    def create_topic(self, topic, partitions=1, timeout=30):
        """Creates `topic` (replication factor 1) with Kafka's own kafka-topics tool and waits until
        every partition has a leader. A failure (the topic exists, a bad name) fails the test."""
        cmd = [java_binary(), *TOOL_JVM_FLAGS,
               f"-Dlog4j.configuration=file:{self.root / 'log4j-tools.properties'}",
               "-cp", os.path.join(kafka_libs(), "*"), "org.apache.kafka.tools.TopicCommand",
               "--bootstrap-server", self.bootstrap, "--create", "--topic", topic,
               "--partitions", str(partitions), "--replication-factor", "1"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"creating topic {topic!r} failed:\n{r.stdout}{r.stderr}"
        deadline = time.monotonic() + timeout
        while True:
            md = self.metadata(topic)
            if md is not None and self._not_led(md, partitions) is None:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {topic!r} was created but not served within "
                                     f"{timeout} s: {md}")
            time.sleep(0.05)

    def metadata(self, topic=None):
        """The broker's metadata as kcat prints it (-L -J), or None if it does not answer."""
        cmd = [KCAT, "-b", self.bootstrap, "-L", "-J", "-m", "2"]
        if topic is not None:
            cmd += ["-t", topic]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # --- internals -----------------------------------------------------------------------------

    def _format(self):
        """A fresh data directory with the meta.properties Kafka's StorageTool would write; the
        broker completes the rest on first start (saves a JVM start, see kafka.cc). The log starts
        afresh too, so that a failure is read from this attempt's log only."""
        self.log_path.unlink(missing_ok=True)
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        (self.data / "meta.properties").write_text(
            f"version=1\ncluster.id={cluster_id()}\nnode.id={NODE_ID}\n")

    def _write_config(self):
        host = "127.0.0.1"
        listeners = f"PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:{self.controller_port}"
        advertised = f"PLAINTEXT://{host}:{self.port}"
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        secure = []
        if self.secure:
            listeners += f",SECURE://{host}:{self.secure_port}"
            advertised += f",SECURE://localhost:{self.secure_port}"  # the certificate's name
            protocols += ",SECURE:SASL_SSL"
            users = " ".join(f'user_{u}="{p}"' for u, p in self.secure["users"].items())
            secure = [
                "sasl.enabled.mechanisms=PLAIN",
                "listener.name.secure.plain.sasl.jaas.config="
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
                "listener.name.secure.ssl.keystore.type=PEM",
                f"listener.name.secure.ssl.keystore.location={self.secure['keystore']}",
            ]
        (self.root / "server.properties").write_text("\n".join([
            "process.roles=broker,controller",
            f"node.id={NODE_ID}",
            f"controller.quorum.voters={NODE_ID}@{host}:{self.controller_port}",
            f"listeners={listeners}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            *secure,
            f"log.dirs={self.data}",
            # Topics exist only when a test (or iotd) creates them, as in production.
            "auto.create.topics.enable=false",
            "num.partitions=1",
            # One broker: everything is replicated once, and acks=all means that broker.
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "min.insync.replicas=1",
            # A consumer group's first member gets its partitions at once, not after 3 s.
            "group.initial.rebalance.delay.ms=0",
            # After a SIGKILL the restarted controller refuses the broker's new registration until
            # the old one's session expires (9 s by default); see kafka.cc.
            "broker.heartbeat.interval.ms=500",
            "broker.session.timeout.ms=2500",
            # The log cleaner would take 128 MiB of the small heap.
            "log.cleaner.dedupe.buffer.size=8388608",
        ]) + "\n")
        log4j = "\n".join([
            "log4j.rootLogger=WARN, file",
            "log4j.appender.file=org.apache.log4j.FileAppender",
            "log4j.appender.file.File={log}",
            "log4j.appender.file.Append=true",
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
            # The lines that say when the broker started and stopped, for whoever reads the log.
            "log4j.logger.kafka.server.KafkaRaftServer=INFO",
        ]) + "\n"
        (self.root / "log4j.properties").write_text(log4j.format(log=self.log_path))
        (self.root / "log4j-tools.properties").write_text(
            log4j.format(log=self.root / "kafka-tools.log"))

    def _launch(self, timeout):
        self._write_config()
        cmd = [java_binary(), *JVM_FLAGS,
               f"-Dlog4j.configuration=file:{self.root / 'log4j.properties'}",
               "-cp", os.path.join(kafka_libs(), "*"),  # java expands the wildcard itself
               "kafka.Kafka", str(self.root / "server.properties")]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self._wait_serving(timeout)
        return self

    @staticmethod
    def _not_led(md, partitions=None):
        """None if the metadata lists node 1 and every partition in it has a leader (and each topic
        has `partitions` partitions, if given); else what is missing."""
        if not any(b["id"] == NODE_ID for b in md.get("brokers", [])):
            return "the broker is not in its own metadata yet"
        for t in md.get("topics", []):
            if "error" in t:
                return f"topic {t['topic']}: {t['error']}"
            if partitions is not None and len(t["partitions"]) != partitions:
                return f"topic {t['topic']} has {len(t['partitions'])} partitions"
            for p in t["partitions"]:
                if "error" in p or p.get("leader", -1) < 0:
                    return f"topic {t['topic']} partition {p['partition']} has no leader"
        return None

    def _wait_serving(self, timeout):
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(f"the Kafka broker on {self.bootstrap} exited with {code} "
                                     f"while starting; its log:\n{self.tail()}")
            # kcat only once the port accepts connections: before that it would only wait.
            if can_connect(self.port):
                md = self.metadata()
                if md is not None:
                    last = self._not_led(md)
                    if last is None:
                        return
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the Kafka broker on {self.bootstrap} did not serve within "
                                     f"{timeout} s (last: {last}); its log:\n{self.tail()}")
            time.sleep(0.05)
