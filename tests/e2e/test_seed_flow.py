"""The seed README's three curl commands, unchanged, and what they answer."""
from conftest import eventually


def test_seed_ingest_answers_queued_with_the_device_id(iotd):
    r = iotd.post({"device_id": "dev-1", "temperature_c": 25.5, "humidity": 60.0})
    assert r.status == 202
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": "queued", "device_id": "dev-1"}


def test_seed_aggregates_appear_for_the_device(iotd):
    assert iotd.post({"device_id": "dev-1", "temperature_c": 25.5, "humidity": 60.0}).status == 202
    def aggregates():
        r = iotd.get("/devices/dev-1/aggregates")
        return r.json() if r.status == 200 else None
    aggs = eventually(aggregates)
    by_key = {(a["sensor_type"], a["window"]): a for a in aggs}
    assert set(by_key) == {("temperature_c", "1m"), ("temperature_c", "1h"),
                           ("humidity", "1m"), ("humidity", "1h")}
    t = by_key[("temperature_c", "1m")]
    assert t["device_id"] == "dev-1"
    assert (t["count"], t["sum"], t["min"], t["max"], t["average"]) == (1, 25.5, 25.5, 25.5, 25.5)
    assert t["timestamp"].endswith("Z") and t["timestamp"][17:19] == "00"


def test_seed_recent_alerts_is_a_json_list(iotd):
    r = iotd.get("/alerts/recent")
    assert r.status == 200
    assert r.json() == []


def test_seed_test_commands(iotd):
    # "Running Tests" in the seed README.
    r = iotd.post({"device_id": "test", "temperature_c": 25, "humidity": 50})
    assert r.status == 202
    assert iotd.get("/health").json() == {"status": "ok"}
    assert eventually(lambda: iotd.get("/stats").json()["total_telemetry"] == 1)
