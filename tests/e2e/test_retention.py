"""Retention: with RAW_RETENTION, readings older than it disappear from the API while newer ones
stay; device rows keep their counts, and the deletions are counted in /metrics."""
import datetime

from conftest import Iotd, eventually, request


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def readings(device, start, n):
    return [{"device_id": device, "ts": iso(start + datetime.timedelta(seconds=i)),
             "temperature_c": 20.0 + i, "humidity": 50.0} for i in range(n)]


def metric(server, name):
    text = request("GET", server.dash("/metrics")).body.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_readings_older_than_raw_retention_disappear_and_newer_ones_stay(data_dir):
    server = Iotd(data_dir, env={"RAW_RETENTION": "1h", "RETENTION_INTERVAL": "1s"}).start()
    try:
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        old_a = readings("ret-a", now - datetime.timedelta(hours=2), 5)
        new_a = readings("ret-a", now - datetime.timedelta(seconds=10), 3)
        old_b = readings("ret-b", now - datetime.timedelta(hours=2, minutes=5), 4)
        # One batch mixing both ages (and devices), so old and new readings share a write.
        r = server.post(old_a + new_a + old_b, path="/ingest/batch")
        assert r.status == 202, r.body

        def device_readings(device):
            r = server.get(f"/devices/{device}")
            return r.json()["readings"] if r.status == 200 else None
        assert eventually(lambda: device_readings("ret-a") == 8
                          and device_readings("ret-b") == 4), server.tail()

        def only_new_left():
            a = server.get("/devices/ret-a/telemetry").json()
            b = server.get("/devices/ret-b/telemetry").json()
            stats = server.get("/stats").json()
            return (sorted(x["temperature_c"] for x in a) == [20.0, 21.0, 22.0] and b == []
                    and stats["total_telemetry"] == 3)
        assert eventually(only_new_left, timeout=20), (
            server.get("/devices/ret-a/telemetry").body, server.get("/stats").body)

        # The newest readings are listed newest first, across devices too.
        everything = server.get("/telemetry").json()
        assert [x["ts"] for x in everything] == [
            x["ts"].replace(".000000Z", "Z") for x in reversed(new_a)]
        # Device rows and their counters stay; aggregates (no AGG_RETENTION) stay.
        assert device_readings("ret-a") == 8 and device_readings("ret-b") == 4
        stats = server.get("/stats").json()
        assert stats["total_devices"] == 2
        assert stats["total_aggregated"] > 0
        assert server.get("/devices/ret-b/aggregates").json() != []
        assert metric(server, "store_expired_total") == len(old_a) + len(old_b)
        assert metric(server, "store_expire_failures_total") == 0
    finally:
        code = server.stop()
    assert code == 0, server.tail()
