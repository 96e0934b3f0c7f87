"""The delivery contract: a 2xx means durable, across kill -9; aggregates equal a recomputation
from the raw readings after any crash; SIGTERM is graceful."""
import collections
import datetime
import math
import random
import signal
import threading
import time

from conftest import Iotd, all_telemetry, eventually, request


def all_aggregates(server, device):
    rows, path = [], f"/devices/{device}/aggregates?limit=1000"
    while path:
        r = server.get(path)
        rows += r.json()
        link = r.headers.get("Link")
        path = link[1:link.index(">")] if link else None
    return rows


def window_start(ts, seconds):
    t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    epoch = int(t.timestamp() // seconds * seconds)
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def recompute(rows):
    acc = {}
    for r in rows:
        for sensor, value in r.items():
            if sensor in ("id", "device_id", "ts", "lat", "lon"):
                continue
            for name, secs in (("1m", 60), ("1h", 3600)):
                key = (sensor, name, window_start(r["ts"], secs))
                c, s, lo, hi = acc.get(key, (0, 0.0, math.inf, -math.inf))
                acc[key] = (c + 1, s + value, min(lo, value), max(hi, value))
    return acc


def assert_aggregates_match_raw(server, device):
    rows = all_telemetry(server, device)
    expected = recompute(rows)
    got = {(a["sensor_type"], a["window"], a["timestamp"]): a for a in all_aggregates(server, device)}
    assert set(got) == set(expected)
    for key, (c, s, lo, hi) in expected.items():
        a = got[key]
        assert (a["count"], a["min"], a["max"]) == (c, lo, hi), key
        assert math.isclose(a["sum"], s, rel_tol=1e-12, abs_tol=1e-9), key
    return rows


def wait_caught_up(server, device="sentinel"):
    """Posts a sentinel after everything else; the bus is ordered, so once the sentinel is
    stored every earlier reading is too."""
    assert server.post({"device_id": device, "temperature_c": 0, "humidity": 0}).status == 202
    assert eventually(lambda: server.get(f"/devices/{device}").status == 200, timeout=30)


def test_kill9_loses_nothing_acknowledged_and_aggregates_stay_exact(data_dir):
    server = Iotd(data_dir).start()
    acked = collections.defaultdict(set)
    lock = threading.Lock()
    stop = threading.Event()
    base = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=30)

    def client(n):
        rnd = random.Random(n)
        seq = 0
        while not stop.is_set():
            device = f"k{n % 4}"
            batch = rnd.random() < 0.3
            items = []
            for _ in range(rnd.randint(2, 20) if batch else 1):
                seq += 1
                ts = base + datetime.timedelta(seconds=rnd.uniform(0, 1800))
                items.append({"device_id": device, "ts": ts.isoformat(), "seq": n * 10**6 + seq,
                              "temperature_c": round(rnd.uniform(-20, 60), 3),
                              "humidity": round(rnd.uniform(0, 100), 3)})
            try:
                if batch:
                    r = server.post(items, path="/ingest/batch", timeout=5)
                else:
                    r = server.post(items[0], timeout=5)
            except OSError:
                continue  # the server died under us: this one was never acknowledged
            if r.status == 202:
                with lock:
                    for it in items:
                        acked[device].add(it["seq"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    time.sleep(2.5)
    server.kill9()
    stop.set()
    for t in threads:
        t.join()
    total_acked = sum(len(s) for s in acked.values())
    assert total_acked > 200

    server = Iotd(data_dir).start()
    try:
        wait_caught_up(server)
        for device, seqs in acked.items():
            rows = assert_aggregates_match_raw(server, device)
            stored = [r["seq"] for r in rows]
            assert len(stored) == len(set(stored)), "a reading was stored twice"
            missing = seqs - set(stored)
            assert not missing, f"{len(missing)} acknowledged readings of {device} lost"
    finally:
        server.stop()


def test_kill9_during_aggregation_then_restart_counts_nothing_twice(data_dir):
    server = Iotd(data_dir).start()
    base = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    batch = [{"device_id": "agg", "ts": (base + datetime.timedelta(milliseconds=i)).isoformat(),
              "temperature_c": float(i % 97), "humidity": 1.0} for i in range(5000)]
    for _ in range(4):
        assert server.post(batch, path="/ingest/batch").status == 202
    server.kill9()  # the aggregator is most likely mid-way
    server = Iotd(data_dir).start()
    try:
        wait_caught_up(server)
        rows = assert_aggregates_match_raw(server, "agg")
        assert len(rows) == 20000
        assert server.get("/devices/agg").json()["readings"] == 20000
    finally:
        server.stop()


def test_sigterm_exits_zero_quickly_and_keeps_everything(data_dir):
    server = Iotd(data_dir).start()
    for i in range(50):
        assert server.post({"device_id": "t", "temperature_c": i, "humidity": 1}).status == 202
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    server = Iotd(data_dir).start()
    try:
        wait_caught_up(server)
        assert server.get("/devices/t").json()["readings"] == 50
    finally:
        server.stop()


def test_sigterm_during_load_answers_in_flight_requests(data_dir):
    server = Iotd(data_dir).start()
    results = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                r = server.post({"device_id": "inflight", "temperature_c": 1, "humidity": 1},
                                timeout=5)
                results.append(r.status)
            except OSError:
                results.append("refused")
                return

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert server.stop(signal.SIGINT) == 0
    stop.set()
    for t in threads:
        t.join()
    accepted = results.count(202)
    assert accepted > 0
    assert all(r in (202, 503, "refused") for r in results), set(results)
    server = Iotd(data_dir).start()
    try:
        wait_caught_up(server)
        assert server.get("/devices/inflight").json()["readings"] >= accepted
    finally:
        server.stop()
