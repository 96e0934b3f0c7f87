"""MQTT ingestion (docs/mqtt.md) against the real binary and a real Mosquitto broker (Debian's).

Readings published with `mosquitto_pub` and with the libmosquitto load generator appear in the
dashboard; a malformed payload is counted, dead-lettered (GET /dlq) and the stream goes on;
`kill -9` of `iotd all` during a QoS 1 stream loses nothing once it restarts (persistent
session: the broker redelivers what was not acknowledged); two `iotd ingest` replicas on Kafka
with a shared subscription split one stream and store no reading twice; bad options stop the
start with a clear error. Every wait has a deadline.
"""
import datetime
import json
import re
import subprocess
import threading

import pytest

from conftest import IOTD, Iotd, all_telemetry, eventually, request
from mqtt_broker import MosquittoBroker
from test_metrics import promtool_check


@pytest.fixture
def broker(tmp_path):
    b = MosquittoBroker(tmp_path / "mqtt").start()
    yield b
    b.stop()


def metrics(server_url):
    text = request("GET", server_url + "/metrics").body.decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def mqtt_iotd(tmp_path, broker, **env):
    server = Iotd(tmp_path / "data", env={"MQTT_URL": broker.url, **env})
    server.start()
    assert eventually(lambda: metrics(server.ingest()).get("mqtt_connected") == 1, timeout=20), \
        server.tail()
    return server


def device_readings(server, device):
    r = server.get(f"/devices/{device}")
    return r.json()["readings"] if r.status == 200 else 0


def test_readings_from_mosquitto_pub_and_the_loadgen_appear_in_the_dashboard(tmp_path, broker):
    server = mqtt_iotd(tmp_path, broker)
    try:
        # The device id comes from the topic; the payload may leave it out or repeat it.
        broker.publish("devices/mq-1/telemetry", '{"temperature_c": 21.5, "humidity": 40}')
        broker.publish("devices/mq-2/telemetry",
                       '[{"device_id": "mq-2", "temperature_c": 20, "humidity": 41,'
                       ' "ts": "2026-01-01T00:00:00Z"},'
                       ' {"temperature_c": 22, "humidity": 42, "ts": "2026-01-01T00:01:00Z"}]')
        out = subprocess.run([IOTD, "loadgen", "--mqtt-url", broker.url, "--devices", "5",
                              "--count", "50", "--unthrottled", "--connections", "2"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert eventually(lambda: device_readings(server, "mq-1") == 1
                          and device_readings(server, "mq-2") == 2
                          and all(device_readings(server, f"dev-{i}") == 10 for i in range(1, 6)),
                          timeout=30), server.tail()
        rows = all_telemetry(server, "mq-1")
        assert rows[0]["temperature_c"] == 21.5 and rows[0]["device_id"] == "mq-1"
        m = metrics(server.ingest())
        assert m['mqtt_readings_accepted_total'] == 53
        assert m['mqtt_messages_total{result="accepted"}'] == 52
        assert m["mqtt_inflight_messages"] == 0
        assert m["mqtt_connected"] == 1
        code, out = promtool_check(request("GET", server.ingest("/metrics")).body)
        assert code == 0, out
        # SIGTERM: a graceful stop ends with an MQTT DISCONNECT (the broker logs it as such,
        # not as a connection that was merely closed).
        assert server.stop() == 0
        assert eventually(lambda: re.search(r"Client iotd-ingest-\S+ disconnected\.", broker.tail()),
                          timeout=10), broker.tail()
    finally:
        server.stop()


def test_a_malformed_payload_is_counted_and_dead_lettered_and_the_stream_goes_on(tmp_path, broker):
    server = mqtt_iotd(tmp_path, broker)
    try:
        broker.publish("devices/bad-1/telemetry", "this is not json")
        broker.publish("devices/bad-1/telemetry",
                       '{"device_id": "someone-else", "temperature_c": 1, "humidity": 2}')
        broker.publish("devices/bad-1/telemetry", '{"temperature_c": "hot", "humidity": 2}')
        broker.publish("devices/bad-1/telemetry", '{"temperature_c": 3, "humidity": 4}')
        assert eventually(lambda: device_readings(server, "bad-1") == 1, timeout=20), server.tail()

        def dead_letters():
            r = server.get("/dlq")
            return r.json() if r.status == 200 else []
        assert eventually(lambda: len(dead_letters()) == 3, timeout=20), dead_letters()
        by_payload = {d["payload"]: d for d in dead_letters()}
        bad = by_payload["this is not json"]
        assert bad["consumer"] == "ingest"
        assert bad["topic"] == "devices/bad-1/telemetry"
        assert "malformed_json" in bad["reason"]
        mismatch = [d for d in by_payload.values() if "someone-else" in d["payload"]][0]
        assert "device_mismatch" in mismatch["reason"]
        m = metrics(server.ingest())
        assert m['mqtt_messages_total{result="malformed_json"}'] == 1
        assert m['mqtt_messages_total{result="device_mismatch"}'] == 1
        assert sum(v for k, v in m.items() if k.startswith("mqtt_messages_total")) == 4, m
        assert m['mqtt_messages_total{result="accepted"}'] == 1
        # Acknowledged: nothing is left in flight, nothing is redelivered.
        assert m["mqtt_inflight_messages"] == 0
    finally:
        server.stop()


def ts_key(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_kill9_during_a_qos1_stream_loses_nothing(tmp_path, broker):
    env = {"MQTT_CLIENT_ID": "iotd-e2e-kill9", "MQTT_SESSION_EXPIRY": "10m"}
    server = mqtt_iotd(tmp_path, broker, **env)
    n = 20000
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    stamps = [start + datetime.timedelta(milliseconds=i) for i in range(n)]
    payloads = [json.dumps({"temperature_c": 20 + i % 10, "humidity": 50,
                            "ts": t.isoformat(timespec="milliseconds").replace("+00:00", "Z")})
                for i, t in enumerate(stamps)]
    publisher = threading.Thread(target=broker.publish_lines,
                                 args=("devices/k9/telemetry", payloads))
    publisher.start()
    try:
        # Kill while the stream is going: what is in flight is durable or not, never lost.
        assert eventually(lambda: device_readings(server, "k9") >= 500, timeout=30), server.tail()
        server.kill9()
        publisher.join(timeout=90)
        assert not publisher.is_alive()
        server = Iotd(tmp_path / "data", env={"MQTT_URL": broker.url, **env}).start()
        stored_at_restart = device_readings(server, "k9")
        assert stored_at_restart < n, "the stream ended before the kill: the test proves nothing"
        # The count includes duplicates (durable, but the PUBACK was lost with the process):
        # wait for every distinct reading instead.
        def missing():
            if device_readings(server, "k9") < n:
                return set(stamps)
            return set(stamps) - {ts_key(r["ts"]) for r in all_telemetry(server, "k9")}
        assert eventually(lambda: not missing(), timeout=90, interval=0.5), server.tail()
        lost = missing()
        assert not lost, f"{len(lost)} readings lost, e.g. {sorted(lost)[:5]}"
    finally:
        server.stop()


@pytest.mark.parametrize("env, message", [
    ({"MQTT_URL": "http://127.0.0.1:1883"}, "MQTT_URL"),
    ({"MQTT_URL": "mqtt://127.0.0.1:99999"}, "MQTT_URL"),
    ({"MQTT_URL": "mqtt://127.0.0.1:1883", "MQTT_TOPICS": "devices/#/telemetry"}, "MQTT_TOPICS"),
    ({"MQTT_URL": "mqtt://127.0.0.1:1883", "MQTT_CA_FILE": "/nonexistent.pem"}, "mqtts://"),
    ({"MQTT_URL": "mqtts://127.0.0.1:8883", "MQTT_CA_FILE": "/nonexistent.pem"}, "MQTT_CA_FILE"),
    ({"MQTT_URL": "mqtts://127.0.0.1:8883", "MQTT_CERT_FILE": "/etc/hostname"}, "MQTT_KEY_FILE"),
    ({"MQTT_URL": "mqtt://127.0.0.1:1883", "MQTT_SESSION_EXPIRY": "soon"}, "MQTT_SESSION_EXPIRY"),
])
def test_bad_mqtt_options_stop_the_start_with_a_clear_error(tmp_path, env, message):
    import os
    out = subprocess.run([IOTD, "all", "--data-dir", str(tmp_path / "data"), "--ingest-port", "0",
                          "--dashboard-port", "0", "--bind-address", "127.0.0.1"],
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr, out.stdout + out.stderr


def test_two_ingest_replicas_with_a_shared_subscription_split_one_stream(tmp_path, broker, kafka,
                                                                          ferretdb):
    """BUS=kafka: two `iotd ingest` with `$share/...` take one stream between them; every
    reading is stored once (the broker gives each message to one member of the group)."""
    from distributed import Cluster
    cluster = Cluster(tmp_path, kafka.bootstrap, ferretdb.url, "mqtt-shared")
    try:
        mqtt = {"MQTT_URL": broker.url, "MQTT_TOPICS": "$share/iotd/devices/+/telemetry"}
        replicas = [cluster.start("ingest", MQTT_CLIENT_ID=f"iotd-e2e-share-{i}", **mqtt)
                    for i in range(2)]
        cluster.start("aggregator")
        dash = cluster.start("dashboard")
        for r in replicas:
            assert eventually(lambda r=r: r.metric("mqtt_connected") == 1, timeout=30), r.tail()
        n = 2000
        out = subprocess.run([IOTD, "loadgen", "--mqtt-url", broker.url, "--devices", "20",
                              "--count", str(n), "--unthrottled", "--connections", "2"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr

        def stored():
            r = dash.get("/stats")
            return r.json()["total_telemetry"] if r.status == 200 else 0
        assert eventually(lambda: stored() >= n, timeout=90), cluster.tails()
        per_replica = [r.metric("mqtt_readings_accepted_total") for r in replicas]
        assert all(v > 0 for v in per_replica), per_replica
        assert sum(per_replica) == n, per_replica
        assert stored() == n  # none stored twice
    finally:
        cluster.stop_all()


def make_certificates(d):
    """A CA, a broker certificate for 127.0.0.1 and a client certificate, made by openssl."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=iotd test CA",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, ext in [("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")]:
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))


def test_tls_to_the_broker_with_a_client_certificate(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs)
    broker = MosquittoBroker(tmp_path / "mqtt", tls={
        "cafile": certs / "ca.pem", "certfile": certs / "server.pem",
        "keyfile": certs / "server.key", "require_certificate": True}).start()
    try:
        tls = {"MQTT_URL": f"mqtts://127.0.0.1:{broker.port}", "MQTT_CA_FILE": str(certs / "ca.pem"),
               "MQTT_CERT_FILE": str(certs / "client.pem"), "MQTT_KEY_FILE": str(certs / "client.key")}
        server = Iotd(tmp_path / "data", env=tls).start()
        try:
            assert eventually(lambda: metrics(server.ingest()).get("mqtt_connected") == 1,
                              timeout=20), server.tail()
            broker.publish("devices/tls-1/telemetry", '{"temperature_c": 1, "humidity": 2}',
                           tls_args=["--cafile", str(certs / "ca.pem"),
                                     "--cert", str(certs / "client.pem"),
                                     "--key", str(certs / "client.key")])
            assert eventually(lambda: device_readings(server, "tls-1") == 1, timeout=20)
        finally:
            server.stop()
        # A broker whose certificate the CA did not sign is refused (verified, not trusted blindly).
        other = tmp_path / "other"
        other.mkdir()
        make_certificates(other)
        server = Iotd(tmp_path / "data2", env={**tls, "MQTT_CA_FILE": str(other / "ca.pem")}).start()
        try:
            assert eventually(lambda: metrics(server.ingest()).get("mqtt_reconnects_total", 0) >= 1,
                              timeout=20)
            assert metrics(server.ingest())["mqtt_connected"] == 0
            assert "certificate verify failed" in server.tail(200)
        finally:
            server.stop()
    finally:
        broker.stop()


def test_while_kafka_is_down_nothing_is_acknowledged_and_nothing_is_lost(tmp_path, broker,
                                                                          own_kafka, ferretdb):
    """Back-pressure: the bus refuses, ingest retries with backoff and acknowledges nothing (the
    messages stay in flight at the broker); when Kafka is back, every reading is stored."""
    from distributed import Cluster
    cluster = Cluster(tmp_path, own_kafka.bootstrap, ferretdb.url, "mqtt-kafka-down",
                      {"KAFKA_DELIVERY_TIMEOUT": "3s"})
    try:
        ingest = cluster.start("ingest", MQTT_URL=broker.url, MQTT_CLIENT_ID="iotd-e2e-down")
        cluster.start("aggregator")
        dash = cluster.start("dashboard")
        assert eventually(lambda: ingest.metric("mqtt_connected") == 1, timeout=30), ingest.tail()
        broker.publish("devices/kd/telemetry", '{"temperature_c": 1, "humidity": 2}')
        assert eventually(lambda: ingest.metric("mqtt_readings_accepted_total") == 1, timeout=30)
        own_kafka.stop()
        payloads = [json.dumps({"temperature_c": i, "humidity": 2,
                                "ts": f"2026-01-01T00:00:{i:02d}Z"}) for i in range(20)]
        broker.publish_lines("devices/kd/telemetry", payloads)
        assert eventually(lambda: (ingest.metric("mqtt_bus_retries_total") or 0) > 0,
                          timeout=30), ingest.tail()
        assert ingest.metric("mqtt_inflight_messages") > 0
        assert ingest.metric("mqtt_readings_accepted_total") == 1  # nothing acknowledged
        own_kafka.restart()
        assert eventually(lambda: ingest.metric("mqtt_readings_accepted_total") == 21,
                          timeout=90), ingest.tail()
        assert eventually(lambda: ingest.metric("mqtt_inflight_messages") == 0, timeout=30)

        def stored():
            r = dash.get("/devices/kd")
            return r.json()["readings"] if r.status == 200 else 0
        assert eventually(lambda: stored() >= 21, timeout=90), cluster.tails()
    finally:
        cluster.stop_all()
