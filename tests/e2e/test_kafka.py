"""Distributed mode (BUS=kafka): separate processes per role on a real Kafka broker and a
MongoDB-wire server (FerretDB), the seed's flow, a load-generator stream, and faults: a killed
aggregator, a broker that stops, a poison message, a store that stops. After each, every
acknowledged reading is stored exactly once and the aggregates equal a recomputation.

Every test is bounded: streams run for seconds, waits have deadlines.
"""
import collections
import datetime
import json
import random
import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import IOTD, Iotd, eventually, request
from distributed import Cluster
from sse import SseClient
from test_durability import assert_aggregates_match_raw
from test_metrics import promtool_check

KCAT = shutil.which("kcat") or "/usr/bin/kcat"


@pytest.fixture
def cluster(request, tmp_path, kafka, ferretdb):
    c = Cluster(tmp_path, kafka.bootstrap, ferretdb.url, request.node.name)
    yield c
    c.stop_all()


def stored_total(dash):
    r = dash.get("/stats")
    return r.json()["total_telemetry"] if r.status == 200 else None


def wait_total(dash, n, timeout=90, exact=True):
    """Waits until the store holds n readings. `exact`: never more. A fault test passes
    exact=False: a request answered 503 (or cut off) while the broker failed may still have
    reached it; such readings are stored, once (the contract is about acknowledged ones)."""
    got = eventually(lambda: (stored_total(dash) or 0) >= n, timeout=timeout)
    assert got, f"stored {stored_total(dash)} of {n} acknowledged readings"
    if exact:
        assert stored_total(dash) == n


class Stream:
    """Clients posting single readings and batches to ingest from threads, remembering every
    acknowledged one by its `seq`, until stopped."""

    def __init__(self, ingest, clients=4, devices=6):
        self.ingest = ingest
        self.acked = collections.defaultdict(set)
        self.sent = set()
        self.statuses = collections.Counter()
        self.retry_after = 0
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.base = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
        self.threads = [threading.Thread(target=self._client, args=(i, devices))
                        for i in range(clients)]

    def _client(self, n, devices):
        rnd = random.Random(n)
        seq = 0
        while not self.stop_event.is_set():
            batch = rnd.random() < 0.3
            items = []
            for _ in range(rnd.randint(2, 10) if batch else 1):
                seq += 1
                ts = self.base + datetime.timedelta(seconds=rnd.uniform(0, 1200))
                items.append({"device_id": f"d{rnd.randrange(devices)}", "ts": ts.isoformat(),
                              "seq": n * 10**6 + seq,
                              "temperature_c": round(rnd.uniform(-20, 60), 3),
                              "humidity": round(rnd.uniform(0, 100), 3)})
            with self.lock:
                self.sent.update(it["seq"] for it in items)
            try:
                if batch:
                    r = self.ingest.post(items, path="/ingest/batch", timeout=15)
                else:
                    r = self.ingest.post(items[0], timeout=15)
            except OSError:
                continue  # never acknowledged
            with self.lock:
                self.statuses[r.status] += 1
                if r.status == 503 and r.headers.get("Retry-After"):
                    self.retry_after += 1
                if r.status == 202:
                    for it in items:
                        self.acked[it["device_id"]].add(it["seq"])
            time.sleep(0.01)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join()

    def total(self):
        return sum(len(s) for s in self.acked.values())


def settled(check, timeout=60):
    """Runs check() until it passes or `timeout` s passed, then once more to raise. With
    STORE=mongodb a batch's raw readings are inserted before its aggregates are applied (after
    its commit), so the dashboard may show a reading a moment before its aggregates."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return check()
        except AssertionError:
            time.sleep(0.2)
    return check()


def assert_each_acknowledged_reading_stored_once(dash, stream):
    settled(lambda: _each_stored_once(dash, stream))


def _each_stored_once(dash, stream):
    for device, seqs in stream.acked.items():
        rows = assert_aggregates_match_raw(dash, device)
        stored = [r["seq"] for r in rows]
        assert len(stored) == len(set(stored)), f"a reading of {device} was stored twice"
        missing = seqs - set(stored)
        assert not missing, f"{len(missing)} acknowledged readings of {device} lost"
        assert set(stored) <= stream.sent, "a reading nobody sent was stored"


def kcat(*args, timeout=30):
    p = subprocess.run([KCAT, *args], capture_output=True, timeout=timeout)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


def test_separate_processes_run_the_seed_flow_and_a_loadgen_stream_exactly(cluster, kafka):
    ingest = cluster.start("ingest")
    agg1 = cluster.start("aggregator")
    agg2 = cluster.start("aggregator")
    alerts = cluster.start("alerts")
    dash = cluster.start("dashboard")

    # The seed's curl flow.
    r = ingest.post({"device_id": "sensor-001", "temperature_c": 23.5, "humidity": 45.2,
                     "lat": 40.7128, "lon": -74.0060})
    assert r.status == 202, r.body
    assert eventually(lambda: dash.get("/devices/sensor-001").status == 200, timeout=60), \
        cluster.tails()
    assert ingest.post({"device_id": "sensor-001", "temperature_c": 75.0,
                        "humidity": 45.2}).status == 202
    alert = eventually(lambda: [a for a in dash.get("/alerts/recent").json()
                                if a["device_id"] == "sensor-001"], timeout=60)
    assert alert and alert[0]["sensor_type"] == "temperature_c", cluster.tails()
    assert dash.get("/telemetry?limit=5").status == 200
    assert dash.get("/aggregated?limit=5").status == 200

    # A stream from the load generator.
    p = subprocess.run([IOTD, "loadgen", "--base-url", ingest.url("", "ingest"), "--devices", "20",
                        "--rps", "5", "--duration", "4s", "--connections", "4"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    accepted = int(re.search(r"readings:\s+(\d+) accepted", p.stdout).group(1))
    assert accepted > 100, p.stdout
    wait_total(dash, accepted + 2)
    devices = [d["device_id"] for d in dash.get("/devices?limit=1000").json()]
    assert len(devices) == 21
    for device in devices:
        rows = settled(lambda: assert_aggregates_match_raw(dash, device))
        assert len({r["id"] for r in rows}) == len(rows)

    # Two replicas shared the work through the consumer group.
    assert agg1.metric("aggregator_records_total") > 0, agg1.tail()
    assert agg2.metric("aggregator_records_total") > 0, agg2.tail()
    assert agg1.metric("aggregator_records_total") + agg2.metric("aggregator_records_total") \
        >= accepted + 2
    lags = {**agg1.metrics_matching("aggregator_consumer_lag{"),
            **agg2.metrics_matching("aggregator_consumer_lag{")}
    assert {re.search(r'partition="(\d+)"', k).group(1) for k in lags} == \
        {str(i) for i in range(6)}
    assert alerts.metric("alerts_records_total") >= accepted + 2

    # An ordinary Kafka client reads what ingest published: keyed by device id.
    keys = kcat("-b", kafka.bootstrap, "-C", "-t", cluster.topic, "-e", "-q", "-f", "%k\n")
    assert set(keys.decode().split()) == set(devices)


def test_a_separate_dashboard_streams_new_readings_from_kafka(cluster):
    ingest = cluster.start("ingest")
    dash = cluster.start("dashboard")
    port = int(dash.url("", "dashboard").rsplit(":", 1)[1])
    listener = SseClient(port)
    try:
        # Its own consumer group starts at the end once Kafka assigns it the partitions: until
        # then readings are not streamed. Post until one arrives.
        def streamed(n):
            assert ingest.post({"device_id": f"kstream-{n}", "temperature_c": 20,
                                "humidity": 40}).status == 202
            return eventually(lambda: listener.of("reading", lambda d: d["device_id"] ==
                                                  f"kstream-{n}"), timeout=1.0)
        assert any(streamed(n) for n in range(60)), cluster.tails()
        # From then on every reading of every partition arrives, once.
        for n in range(100, 130):
            assert ingest.post({"device_id": f"kstream-{n}", "temperature_c": 20,
                                "humidity": 40}).status == 202
        want = {f"kstream-{n}" for n in range(100, 130)}
        got = lambda: [d["device_id"] for _, d in listener.of("reading")
                       if d["device_id"] in want]
        assert eventually(lambda: len(got()) >= len(want), timeout=30), (got(), cluster.tails())
        assert sorted(got()) == sorted(want)
        assert dash.metric("dashboard_stream_clients") == 1
    finally:
        listener.close()


def test_every_role_serves_metrics_health_and_ready_on_its_own_port(cluster):
    roles = [cluster.start(r) for r in ("ingest", "aggregator", "alerts", "dashboard")]
    for role in roles:
        assert role.get("/health").status == 200
        assert role.get("/ready").status == 200
        text = role.get("/metrics").body.decode()
        promtool_check(text.encode())
    # Lag per partition, once the first fetch told the watermarks.
    assert eventually(lambda: "aggregator_consumer_lag{partition=" in
                      roles[1].get("/metrics").body.decode(), timeout=30)
    assert eventually(lambda: "alerts_consumer_lag{partition=" in
                      roles[2].get("/metrics").body.decode(), timeout=30)
    assert "kafka_producer_pending_messages" in roles[0].get("/metrics").body.decode()


def test_kill9_of_an_aggregator_mid_stream_the_other_takes_over_exactly(cluster):
    ingest = cluster.start("ingest")
    survivor = cluster.start("aggregator")
    victim = cluster.start("aggregator")
    dash = cluster.start("dashboard")
    assert eventually(lambda: (victim.metric("aggregator_records_total") or 0) >= 0)
    stream = Stream(ingest).start()
    try:
        assert eventually(lambda: (victim.metric("aggregator_records_total") or 0) > 0,
                          timeout=30), victim.tail()
        victim.kill9()
        time.sleep(2)
    finally:
        stream.stop()
    assert stream.total() > 50
    wait_total(dash, stream.total())
    assert_each_acknowledged_reading_stored_once(dash, stream)
    # The survivor got the victim's partitions.
    assert eventually(lambda: len(survivor.metrics_matching("aggregator_consumer_lag{")) == 6,
                      timeout=20), survivor.metrics_matching("aggregator_consumer_lag{")
    assert survivor.metric("aggregator_rebalances_total") >= 2


def test_broker_stop_gives_503_with_retry_after_then_recovers_losing_nothing(
        request, tmp_path, own_kafka, ferretdb):
    cluster = Cluster(tmp_path, own_kafka.bootstrap, ferretdb.url, request.node.name,
                      {"KAFKA_DELIVERY_TIMEOUT": "3s"})
    try:
        ingest = cluster.start("ingest")
        cluster.start("aggregator")
        dash = cluster.start("dashboard")
        stream = Stream(ingest, clients=3).start()
        try:
            assert eventually(lambda: stream.total() > 20, timeout=30)
            own_kafka.stop()
            assert eventually(lambda: stream.retry_after > 0, timeout=30), ingest.tail()
            assert eventually(lambda: not ingest.ready(), timeout=10)
            during = stream.total()
            time.sleep(1)
            own_kafka.restart()
            assert eventually(ingest.ready, timeout=60), ingest.tail()
            assert eventually(lambda: stream.total() > during + 20, timeout=30)
        finally:
            stream.stop()
        assert stream.statuses[503] > 0
        wait_total(dash, stream.total(), exact=False)
        assert_each_acknowledged_reading_stored_once(dash, stream)
    finally:
        cluster.stop_all()


def test_a_poison_message_becomes_a_dead_letter_and_does_not_block_its_partition(cluster, kafka):
    ingest = cluster.start("ingest")
    agg = cluster.start("aggregator")
    cluster.start("alerts")
    dash = cluster.start("dashboard")
    assert ingest.post({"device_id": "p1", "temperature_c": 20, "humidity": 40}).status == 202
    # Another producer writes garbage with the device's key: the same partition (with the Java
    # client's partitioner, as ingest uses), in between.
    p = subprocess.run([KCAT, "-b", kafka.bootstrap, "-P", "-t", cluster.topic, "-K", "\t",
                        "-X", "partitioner=murmur2_random"],
                       input=b"p1\tthis is not a reading\n", capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert ingest.post({"device_id": "p1", "temperature_c": 21, "humidity": 41}).status == 202

    # The reading behind it is processed.
    assert eventually(lambda: dash.get("/devices/p1").status == 200 and
                      dash.get("/devices/p1").json()["readings"] == 2, timeout=60), cluster.tails()
    letters = eventually(lambda: len(dash.get("/dlq").json()) == 2 and dash.get("/dlq").json(),
                         timeout=30)
    assert letters, dash.get("/dlq").body
    assert {d["consumer"] for d in letters} == {"aggregator", "alerts"}
    for d in letters:
        assert d["payload"] == "this is not a reading"
        assert d["payload_encoding"] == "utf8"
        assert d["key"] == "p1"
        assert d["reason"].startswith("undecodable"), d
        assert d["attempts"] == 1
        assert d["topic"] == cluster.topic
        assert d["offset"] >= 1
    # Counted once the batch is applied (a moment after the store shows it).
    assert eventually(
        lambda: agg.metric('aggregator_dead_letters_total{cause="undecodable"}') == 1, timeout=10)

    # DLQ_TOPIC carries the same, readable by any Kafka client.
    out = kcat("-b", kafka.bootstrap, "-C", "-t", cluster.dlq_topic, "-e", "-q")
    published = [json.loads(line) for line in out.decode().splitlines() if line]
    assert sorted(d["consumer"] for d in published) == ["aggregator", "alerts"]
    assert all(d["payload"] == "this is not a reading" for d in published)

    # Replay sends the aggregator's dead letter back to the aggregator alone.
    p = subprocess.run([IOTD, "dlq", "replay", "--consumer", "aggregator", "--idle", "3s"],
                       env={**cluster.env, "PATH": "/usr/bin:/bin"}, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "replayed 1 dead letters" in p.stdout, p.stdout
    # Still garbage, so the aggregator gives up on it again; alerts never sees it again.
    again = eventually(lambda: len(dash.get("/dlq").json()) == 3 and dash.get("/dlq").json(),
                       timeout=30)
    assert again, dash.get("/dlq").body
    assert collections.Counter(d["consumer"] for d in again) == {"aggregator": 2, "alerts": 1}
    # A second replay finds nothing new of the aggregator's first dead letter (it is done).
    assert dash.get("/devices/p1").json()["readings"] == 2


def test_a_store_outage_pauses_the_consumers_and_loses_nothing(request, tmp_path, kafka,
                                                                own_ferretdb):
    cluster = Cluster(tmp_path, kafka.bootstrap, own_ferretdb.url, request.node.name,
                      {"MONGO_TIMEOUT": "1s"})
    try:
        ingest = cluster.start("ingest")
        agg = cluster.start("aggregator")
        cluster.start("alerts")
        dash = cluster.start("dashboard")
        stream = Stream(ingest, clients=3).start()
        try:
            assert eventually(lambda: stream.total() > 20, timeout=30)
            own_ferretdb.stop()
            assert eventually(lambda: not agg.ready(), timeout=20), agg.tail()
            during = stream.total()
            # Ingest does not need the store: it keeps acknowledging.
            assert eventually(lambda: stream.total() > during + 20, timeout=30)
            own_ferretdb.restart()
            assert eventually(agg.ready, timeout=60), agg.tail()
        finally:
            stream.stop()
        assert stream.statuses[202] > 0
        wait_total(dash, stream.total())
        assert_each_acknowledged_reading_stored_once(dash, stream)
        assert agg.metric("aggregator_store_retries_total") > 0
    finally:
        cluster.stop_all()


def test_all_in_one_process_on_kafka_with_sqlite(tmp_path, kafka, request):
    n = abs(hash(request.node.name)) % 10**6
    server = Iotd(tmp_path / "data", env={
        "BUS": "kafka", "STORE": "sqlite", "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "TELEMETRY_TOPIC": f"all-{n}", "DLQ_TOPIC": f"all-dlq-{n}",
        "KAFKA_AGGREGATOR_GROUP": f"all-agg-{n}", "KAFKA_ALERTS_GROUP": f"all-alerts-{n}"})
    server.start()
    try:
        assert server.post({"device_id": "s1", "temperature_c": 23.5, "humidity": 45.2}).status \
            == 202
        assert server.post([{"device_id": "s1", "temperature_c": 80, "humidity": 45.2}],
                           path="/ingest/batch").status == 202
        assert eventually(lambda: server.get("/devices/s1").status == 200 and
                          server.get("/devices/s1").json()["readings"] == 2, timeout=60)
        assert eventually(lambda: server.get("/alerts?status=active").json(), timeout=30)
    finally:
        server.stop()
    # A restart resumes from the store's checkpoints: nothing is applied twice.
    server.start()
    try:
        assert server.post({"device_id": "s1", "temperature_c": 24, "humidity": 45}).status == 202
        assert eventually(lambda: server.get("/devices/s1").json()["readings"] == 3, timeout=60)
        time.sleep(1)
        assert server.get("/devices/s1").json()["readings"] == 3
    finally:
        server.stop()
