"""Distributed mode for the end-to-end tests: iotd roles as separate processes sharing one Kafka
broker and one MongoDB-wire server (FerretDB), as users deploy them.

A `Cluster` names its topics, consumer groups and database after the test, so tests sharing the
session's broker and FerretDB never see each other's data. Each `Role` is one `iotd <role>`
process on free ports (read from its log), started and waited for (/ready) like `Iotd`.
"""
import itertools
import json
import os
import pathlib
import re
import signal
import subprocess
import time

from conftest import IOTD, eventually, request, unique_db_name

_cluster_counter = itertools.count(1)

# The listener each role logs ("<name> listening on port N") and the variable of its port.
LISTENERS = {
    "ingest": [("ingest", "INGEST_PORT")],
    "dashboard": [("dashboard", "DASHBOARD_PORT")],
    "aggregator": [("aggregator", "AGGREGATOR_PORT")],
    "alerts": [("alerts", "ALERTS_PORT")],
    "all": [("ingest", "INGEST_PORT"), ("dashboard", "DASHBOARD_PORT")],
}


class Role:
    """One `iotd <role>` process."""

    def __init__(self, role, env, log_path):
        self.role = role
        self.env = env
        self.log_path = pathlib.Path(log_path)
        self.proc = None
        self.ports = {}

    def start(self, wait_ready=True):
        env = dict(os.environ)
        env.update({"BIND_ADDRESS": "127.0.0.1", "LOG_LEVEL": "info"})
        for _, var in LISTENERS[self.role]:
            env[var] = "0"
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.log_offset = self.log.tell()
        self.proc = subprocess.Popen([IOTD, self.role], env=env, stdout=self.log,
                                     stderr=self.log)
        self._read_ports()
        if wait_ready:
            assert eventually(self.ready, timeout=60), self.tail()
        return self

    def _read_ports(self):
        names = [name for name, _ in LISTENERS[self.role]]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                lines = f.read().decode(errors="replace").splitlines()
            for line in lines:
                try:
                    msg = json.loads(line)["msg"]
                except (ValueError, KeyError):
                    continue
                for name in names:
                    prefix = f"{name} listening on port "
                    if msg.startswith(prefix):
                        self.ports[name] = int(msg[len(prefix):])
            if self.proc.poll() is not None:
                raise AssertionError(f"iotd {self.role} exited at start-up:\n" + self.tail())
            if len(self.ports) == len(names):
                return
            time.sleep(0.05)
        raise AssertionError(f"iotd {self.role} did not log its ports:\n" + self.tail())

    def url(self, path="", listener=None):
        port = self.ports[listener or LISTENERS[self.role][-1][0]]
        return f"http://127.0.0.1:{port}{path}"

    def ready(self):
        try:
            return request("GET", self.url("/ready"), timeout=2).status == 200
        except OSError:
            return False

    def get(self, path, **kw):
        return request("GET", self.url(path), **kw)

    def post(self, body, path="/ingest", **kw):
        return request("POST", self.url(path, "ingest"), body, **kw)

    def metric(self, series):
        """The value of one series of /metrics (`name` or `name{labels}`), or None."""
        text = request("GET", self.url("/metrics")).body.decode()
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return None

    def metrics_matching(self, prefix):
        text = request("GET", self.url("/metrics")).body.decode()
        return {line.split()[0]: float(line.split()[-1]) for line in text.splitlines()
                if line.startswith(prefix)}

    def tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class Cluster:
    """The environment every role of one test shares, and its processes."""

    def __init__(self, tmp_path, bootstrap, mongo_url, test_name, extra_env=None):
        n = next(_cluster_counter)
        slug = re.sub(r"[^A-Za-z0-9]", "-", test_name)[:60]
        self.tmp_path = pathlib.Path(tmp_path)
        self.topic = f"t{n}-{slug}"
        self.dlq_topic = f"dlq{n}-{slug}"
        self.env = {
            "BUS": "kafka",
            "STORE": "mongodb",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TELEMETRY_TOPIC": self.topic,
            "DLQ_TOPIC": self.dlq_topic,
            "KAFKA_PARTITIONS": "6",
            "KAFKA_AGGREGATOR_GROUP": f"agg{n}-{slug}",
            "KAFKA_ALERTS_GROUP": f"alerts{n}-{slug}",
            # A killed worker's partitions move after this long.
            "KAFKA_SESSION_TIMEOUT": "6s",
            "KAFKA_TIMEOUT": "60s",
            "MONGO_URL": mongo_url,
            "MONGO_DB": unique_db_name(test_name),
            "DATA_DIR": str(self.tmp_path / "data"),
            **(extra_env or {}),
        }
        self.roles = []

    def start(self, role, wait_ready=True, **env):
        index = sum(1 for r in self.roles if r.role == role)
        log = self.tmp_path / f"{role}{index}.log"
        r = Role(role, {**self.env, **env}, log).start(wait_ready=wait_ready)
        self.roles.append(r)
        return r

    def stop_all(self):
        for r in self.roles:
            r.stop()

    def tails(self):
        return "\n".join(f"--- {r.role} ({r.log_path.name})\n{r.tail(25)}" for r in self.roles)
