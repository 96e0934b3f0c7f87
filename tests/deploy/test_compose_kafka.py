"""docker-compose.yml's Kafka service, run for real: its environment becomes a server.properties
the way the apache/kafka image turns KAFKA_* variables into properties, with the Compose
network's names and ports mapped to 127.0.0.1 and free ports. The broker must start from it, serve
both listeners, and take readings from `iotd ingest` configured with ingestion-api's own
environment, which a client on the host's listener (9094) then reads."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import REPO
from test_compose import resolved

sys.path.insert(0, str(REPO / "tests/e2e"))
from kafka_broker import KCAT, KafkaBroker, free_ports  # noqa: E402


def image_property(name):
    """The apache/kafka image's rule: KAFKA_FOO_BAR -> foo.bar; '__' -> '_'; '___' -> '-'."""
    key = name[len("KAFKA_"):].lower()
    return key.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")


class ComposeKafka(KafkaBroker):
    """The compose file's broker: its cluster id and properties, on this machine's free ports."""

    def __init__(self, root, env):
        super().__init__(root)
        self.env = env
        self.external_port = free_ports(1)[0]

    def local(self, value):
        """A compose value with the service names and container ports of this run."""
        value = str(value).replace("kafka:", "127.0.0.1:").replace("localhost:", "127.0.0.1:")
        value = value.replace("://:", "://127.0.0.1:")
        for container, port in ((9092, self.port), (9093, self.controller_port),
                                (9094, self.external_port)):
            value = value.replace(f":{container}", f":{port}")
        return value

    def _format(self):
        super()._format()
        (self.data / "meta.properties").write_text(
            f"version=1\ncluster.id={self.env['CLUSTER_ID']}\nnode.id={self.env['KAFKA_NODE_ID']}\n")

    def _write_config(self):
        super()._write_config()  # the log4j files; server.properties is replaced below
        props = {image_property(k): self.local(v) for k, v in self.env.items()
                 if k.startswith("KAFKA_") and k not in ("KAFKA_LOG_DIRS", "KAFKA_NODE_ID")}
        props["node.id"] = self.env["KAFKA_NODE_ID"]
        props["log.dirs"] = str(self.data)
        # The harness's settings for a small heap; not broker behaviour the compose file sets.
        props["log.cleaner.dedupe.buffer.size"] = "8388608"
        (self.root / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in props.items()))


@pytest.fixture(scope="module")
def stack(repo):
    return resolved(repo, "docker-compose.yml")["services"]


def test_kafka_service_runs_and_takes_readings_from_ingest(stack, iotd_bin, tmp_path):
    env = stack["kafka"]["environment"]
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    broker = ComposeKafka(tmp_path / "kafka", env).start()
    try:
        # Both listeners answer, each advertising itself (the host's one as localhost:9094).
        for port in (broker.port, broker.external_port):
            r = subprocess.run([KCAT, "-b", f"127.0.0.1:{port}", "-L", "-J", "-m", "5"],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr + broker.tail()
            assert json.loads(r.stdout)["brokers"][0]["name"] == f"127.0.0.1:{port}"

        ingest_env = {k: broker.local(v) for k, v in stack["ingestion-api"]["environment"].items()}
        ingest_env.update({"INGEST_PORT": str(free_ports(1)[0]), "BIND_ADDRESS": "127.0.0.1",
                           "DATA_DIR": str(tmp_path / "ingest"), "PATH": os.environ["PATH"]})
        log = open(tmp_path / "ingest.log", "wb")
        proc = subprocess.Popen([str(iotd_bin), *stack["ingestion-api"]["command"]],
                                env=ingest_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{ingest_env['INGEST_PORT']}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(url + "/ready", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert proc.poll() is None, (tmp_path / "ingest.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "ingest.log").read_text()
                time.sleep(0.1)
            body = json.dumps({"device_id": "dev-1", "temperature_c": 25.5,
                               "humidity": 60.0}).encode()
            req = urllib.request.Request(url + "/ingest", body,
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 202
            # iotd created the topics with the compose file's partitions; a host client reads
            # the reading through the external listener.
            topic = ingest_env["TELEMETRY_TOPIC"]
            md = json.loads(subprocess.run(
                [KCAT, "-b", f"127.0.0.1:{broker.external_port}", "-L", "-J", "-t", topic],
                capture_output=True, text=True, timeout=30, check=True).stdout)
            assert len(md["topics"][0]["partitions"]) == int(ingest_env["KAFKA_PARTITIONS"])
            out = subprocess.run(
                [KCAT, "-b", f"127.0.0.1:{broker.external_port}", "-C", "-t", topic, "-e",
                 "-f", "%k\n"], capture_output=True, text=True, timeout=30, check=True).stdout
            assert out.split() == ["dev-1"]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
            log.close()
    finally:
        broker.stop()
