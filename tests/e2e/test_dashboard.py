"""Every dashboard endpoint, with its parameters, paging and errors."""
import datetime
import urllib.parse

from conftest import eventually, request


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ingest_series(iotd, device, n, start, step_s=1.0, temp=20.0):
    items = []
    for i in range(n):
        ts = start + datetime.timedelta(seconds=i * step_s)
        items.append({"device_id": device, "ts": iso(ts), "temperature_c": temp + i,
                      "humidity": 50.0, "pressure": 1000 + i})
    r = iotd.post(items, path="/ingest/batch")
    assert r.status == 202, r.body
    return items


def wait_readings(iotd, device, n):
    def done():
        r = iotd.get(f"/devices/{device}")
        return r.status == 200 and r.json()["readings"] == n
    assert eventually(done), iotd.get(f"/devices/{device}").body


def base_time():
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now - datetime.timedelta(hours=2)


def test_root_health_and_ready(iotd):
    assert iotd.get("/").status == 200
    assert iotd.get("/health").json() == {"status": "ok"}
    assert iotd.get("/ready").json() == {"status": "ready"}
    assert request("GET", iotd.ingest("/health")).json() == {"status": "ok"}
    assert request("GET", iotd.ingest("/ready")).status == 200


def test_telemetry_is_newest_first_with_every_field(iotd):
    start = base_time()
    items = ingest_series(iotd, "dev-a", 5, start)
    wait_readings(iotd, "dev-a", 5)
    got = iotd.get("/devices/dev-a/telemetry").json()
    assert [g["temperature_c"] for g in got] == [24.0, 23.0, 22.0, 21.0, 20.0]
    first = got[-1]
    assert first["device_id"] == "dev-a"
    assert first["ts"] == items[0]["ts"].replace(".000000Z", "Z")
    assert first["humidity"] == 50.0 and first["pressure"] == 1000
    assert isinstance(first["id"], str)
    all_rows = iotd.get("/telemetry").json()
    assert len(all_rows) == 5


def test_telemetry_pages_with_a_cursor_and_a_link(iotd):
    start = base_time()
    ingest_series(iotd, "dev-p", 25, start)
    wait_readings(iotd, "dev-p", 25)
    seen = []
    path = "/devices/dev-p/telemetry?limit=10"
    pages = 0
    while path:
        r = iotd.get(path)
        assert r.status == 200
        seen += [x["id"] for x in r.json()]
        pages += 1
        link = r.headers.get("Link")
        if link:
            assert r.headers["X-Next-Cursor"] in link
            path = link[1:link.index(">")]
        else:
            path = None
        if pages == 2:
            # New data arriving between pages does not disturb the listing.
            ingest_series(iotd, "dev-p", 3, start + datetime.timedelta(hours=1))
            wait_readings(iotd, "dev-p", 28)
    assert len(seen) == 25 and len(set(seen)) == 25
    assert pages == 3


def test_telemetry_from_to_filters(iotd):
    start = base_time()
    ingest_series(iotd, "dev-r", 10, start)
    wait_readings(iotd, "dev-r", 10)
    frm = urllib.parse.quote(iso(start + datetime.timedelta(seconds=3)))
    to = urllib.parse.quote(iso(start + datetime.timedelta(seconds=6)))
    got = iotd.get(f"/devices/dev-r/telemetry?from={frm}&to={to}").json()
    assert [g["temperature_c"] for g in got] == [25.0, 24.0, 23.0]


def test_aggregates_by_window_and_sensor(iotd):
    start = base_time().replace(minute=0, second=0)
    ingest_series(iotd, "dev-g", 90, start)  # 90 s: two 1m windows, one 1h window
    wait_readings(iotd, "dev-g", 90)
    minute = iotd.get("/devices/dev-g/aggregates?window=1m&sensor_type=temperature_c").json()
    assert [(a["count"], a["min"], a["max"]) for a in minute] == [(30, 80.0, 109.0),
                                                                   (60, 20.0, 79.0)]
    assert minute[1]["sum"] == sum(20.0 + i for i in range(60))
    assert minute[1]["average"] == minute[1]["sum"] / 60
    hour = iotd.get("/devices/dev-g/aggregates?window=1h&sensor_type=pressure").json()
    assert len(hour) == 1 and hour[0]["count"] == 90 and hour[0]["window"] == "1h"
    assert len(iotd.get("/aggregated?limit=1000").json()) == 3 * 3


def test_devices_list_and_one_device(iotd):
    start = base_time()
    ingest_series(iotd, "dev-2", 3, start)
    ingest_series(iotd, "dev-1", 2, start)
    wait_readings(iotd, "dev-2", 3)
    wait_readings(iotd, "dev-1", 2)
    devices = iotd.get("/devices").json()
    assert [d["device_id"] for d in devices] == ["dev-1", "dev-2"]
    d2 = iotd.get("/devices/dev-2").json()
    assert d2["readings"] == 3
    assert d2["first_seen"] == iso(start).replace(".000000Z", "Z")
    assert d2["latest"]["temperature_c"] == 22.0


def test_unknown_device_is_404(iotd):
    for path in ("/devices/nobody", "/devices/nobody/telemetry", "/devices/nobody/aggregates"):
        r = iotd.get(path)
        assert r.status == 404, path
        assert r.json()["error"] == "device_not_found"


def test_stats_counts_everything(iotd):
    # Four readings 1 s apart from the start of a minute: one 1m and one 1h window per sensor.
    ingest_series(iotd, "dev-s", 4, base_time().replace(second=0))
    wait_readings(iotd, "dev-s", 4)
    s = iotd.get("/stats").json()
    assert s["total_devices"] == 1
    assert s["total_telemetry"] == 4
    assert s["total_aggregated"] == 3 * 2  # 3 sensors x 2 windows
    assert s["ingest_rate_per_s"] >= 0


def test_bad_query_parameters_are_422_naming_the_parameter(iotd):
    for path, param in [("/telemetry?limit=0", "limit"), ("/telemetry?limit=1001", "limit"),
                        ("/telemetry?limit=abc", "limit"), ("/telemetry?from=yesterday", "from"),
                        ("/aggregated?window=5x", "window"), ("/alerts?status=open", "status"),
                        ("/alerts/recent?minutes=-1", "minutes"),
                        ("/telemetry?cursor=zzz", "cursor")]:
        r = iotd.get(path)
        assert r.status == 422, path
        assert r.json()["field"] == param, path


def test_unknown_route_and_wrong_method(iotd):
    r = iotd.get("/nope")
    assert r.status == 404 and r.json()["error"]
    r = request("DELETE", iotd.dash("/telemetry"))
    assert r.status == 405 and "GET" in r.headers["Allow"]
    r = request("GET", iotd.ingest("/ingest"))
    assert r.status == 405
