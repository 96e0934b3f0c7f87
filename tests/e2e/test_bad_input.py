"""What a broken device, a hostile client and a flaky network send: each gets its status code
and a JSON error, and nothing of it is stored."""
import datetime
import json
import socket

import pytest

from conftest import eventually, request

GOOD = {"device_id": "dev-ok", "temperature_c": 21.0, "humidity": 40.0}
FUTURE = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()

CASES = [
    # (name, body, content type, status, field)
    ("not json", "{device_id: dev-1", "application/json", 400, None),
    ("empty body", "", "application/json", 400, None),
    ("array instead of object", [GOOD], "application/json", 400, None),
    ("missing device_id", {"temperature_c": 1, "humidity": 2}, "application/json", 422, "device_id"),
    ("device_id object (injection)", {"device_id": {"$ne": None}, "temperature_c": 1, "humidity": 2},
     "application/json", 422, "device_id"),
    ("device_id with $", {"device_id": "a.b$c", "temperature_c": 1, "humidity": 2},
     "application/json", 422, "device_id"),
    ("device_id too long", {"device_id": "d" * 129, "temperature_c": 1, "humidity": 2},
     "application/json", 422, "device_id"),
    ("temperature as string", {"device_id": "d1", "temperature_c": "25", "humidity": 2},
     "application/json", 422, "temperature_c"),
    ("missing humidity", {"device_id": "d1", "temperature_c": 25}, "application/json", 422, "humidity"),
    ("infinite number", '{"device_id":"d1","temperature_c":1e999,"humidity":2}',
     "application/json", 422, "temperature_c"),
    ("NaN literal", '{"device_id":"d1","temperature_c":NaN,"humidity":2}', "application/json", 400,
     None),
    ("lat out of range", {"device_id": "d1", "temperature_c": 1, "humidity": 2, "lat": 91},
     "application/json", 422, "lat"),
    ("lon out of range", {"device_id": "d1", "temperature_c": 1, "humidity": 2, "lon": -181},
     "application/json", 422, "lon"),
    ("bad timestamp", {"device_id": "d1", "ts": "2024-02-30T00:00:00Z", "temperature_c": 1,
                       "humidity": 2}, "application/json", 422, "ts"),
    ("timestamp as number", {"device_id": "d1", "ts": 1700000000, "temperature_c": 1, "humidity": 2},
     "application/json", 422, "ts"),
    ("timestamp in the future", {"device_id": "d1", "ts": FUTURE, "temperature_c": 1, "humidity": 2},
     "application/json", 422, "ts"),
    ("nested object", {"device_id": "d1", "temperature_c": 1, "humidity": 2, "x": {"y": 1}},
     "application/json", 422, "x"),
    ("duplicate field", '{"device_id":"d1","temperature_c":1,"temperature_c":2,"humidity":2}',
     "application/json", 422, "temperature_c"),
    ("wrong content type", GOOD, "text/plain", 415, None),
]


@pytest.mark.parametrize("name,body,ctype,status,field", CASES, ids=[c[0] for c in CASES])
def test_bad_reading_is_rejected_with_a_json_error(iotd, name, body, ctype, status, field):
    r = iotd.post(body, content_type=ctype)
    assert r.status == status, r.body
    err = r.json()
    assert isinstance(err["error"], str) and err["message"]
    if field:
        assert err["field"] == field


def test_rejected_readings_store_nothing_and_are_counted(iotd):
    for _, body, ctype, _, _ in CASES:
        iotd.post(body, content_type=ctype)
    # A good reading after them all: once it is stored, nothing else was. Wait on the devices
    # list: a store applies a batch's device counts last (docs/storage.md), so when the device is
    # listed, everything before it has been applied (waiting on total_telemetry, a count of raw
    # readings, raced the devices write on MongoDB).
    assert iotd.post(GOOD).status == 202
    assert eventually(lambda: [d["device_id"] for d in iotd.get("/devices").json()] == ["dev-ok"])
    assert iotd.get("/stats").json()["total_telemetry"] == 1
    metrics = request("GET", iotd.ingest("/metrics")).body.decode()
    rejected = [l for l in metrics.splitlines() if l.startswith("ingest_readings_rejected_total{")]
    assert sum(float(l.rsplit(" ", 1)[1]) for l in rejected) >= len(CASES) - 1


def test_body_too_large_is_413(iotd):
    big = {"device_id": "d1", "temperature_c": 1, "humidity": 2, "note": "x" * (70 * 1024)}
    r = iotd.post(big)
    assert r.status == 413
    assert r.json()["error"]


def test_batch_reports_invalid_items_by_index(iotd):
    items = [GOOD, {"device_id": "d2", "temperature_c": "hot", "humidity": 1}, GOOD, 42]
    r = iotd.post(items, path="/ingest/batch")
    assert r.status == 202
    body = r.json()
    assert body["accepted"] == 2 and body["rejected"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]][0] == (1, "temperature_c")
    assert body["errors"][1]["index"] == 3
    assert eventually(lambda: iotd.get("/stats").json()["total_telemetry"] == 2)


def test_batch_accepts_ndjson(iotd):
    lines = "\n".join(json.dumps(dict(GOOD, device_id=f"n{i}")) for i in range(3)) + "\n"
    r = iotd.post(lines, path="/ingest/batch", content_type="application/x-ndjson")
    assert r.status == 202 and r.json()["accepted"] == 3
    assert eventually(lambda: iotd.get("/stats").json()["total_devices"] == 3)


def test_batch_all_invalid_is_422_and_empty_is_422(iotd):
    r = iotd.post([{"device_id": 1}], path="/ingest/batch")
    assert r.status == 422 and r.json()["rejected"] == 1
    assert iotd.post([], path="/ingest/batch").status == 422
    assert iotd.post("[1,", path="/ingest/batch").status == 400


def test_batch_over_the_item_limit_is_413(data_dir):
    from conftest import Iotd
    server = Iotd(data_dir, env={"BATCH_MAX_ITEMS": "5"}).start()
    try:
        r = server.post([GOOD] * 6, path="/ingest/batch")
        assert r.status == 413 and r.json()["error"] == "too_many_items"
        assert server.post([GOOD] * 5, path="/ingest/batch").status == 202
    finally:
        server.stop()


def test_garbage_on_the_socket_gets_400_and_the_server_lives(iotd):
    with socket.create_connection(("127.0.0.1", iotd.ingest_port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 400")
    assert iotd.post(GOOD).status == 202
