"""STORE=mongodb against a real MongoDB wire-protocol server (FerretDB): what iotd writes is the
seed's schema as another client sees it; a store outage loses nothing acknowledged and shows on
/ready; device ids that look like query operators match nothing but themselves (on both stores).
"""
import datetime
import json
import os
import pathlib
import subprocess
import threading
import time

import pytest

from conftest import IOTD, Iotd, all_telemetry, eventually, request

HERE = pathlib.Path(__file__).resolve().parent
SCHEMA_CHECK = HERE / "mongo_schema_check.py"
# Debian's python3, which has python3-pymongo; the python running pytest may not.
SYSTEM_PYTHON = "/usr/bin/python3"


def at(seconds):
    """An ISO timestamp `seconds` after five minutes ago, in whole milliseconds (BSON dates)."""
    t = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    t -= datetime.timedelta(minutes=5)
    return (t + datetime.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def pymongo_run(code, *args):
    """Runs `code` with Debian's python3 and pymongo; argv[1:] are `args`."""
    # os._exit: pymongo's monitor threads hold a normal exit for about half a second.
    code += "\nimport os, sys\nsys.stdout.flush()\nos._exit(0)\n"
    p = subprocess.run([SYSTEM_PYTHON, "-c", code, *args], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def schema_check(url, db, sent=None, tmp_path=None):
    cmd = [SYSTEM_PYTHON, str(SCHEMA_CHECK), url, db]
    if sent is not None:
        path = tmp_path / "sent.json"
        path.write_text(json.dumps(sent))
        cmd += ["--sent", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


# --- a. the schema, checked by an independent client ----------------------------------------

@pytest.mark.parametrize("store", ["mongodb"], indirect=True)
def test_documents_and_indexes_follow_the_seed_schema(iotd, store, tmp_path):
    sent = [
        {"device_id": "schema-1", "ts": at(0), "temperature_c": 21.5, "humidity": 40,
         "lat": 52.52, "lon": 13.405},
        {"device_id": "schema-1", "ts": at(1), "temperature_c": 55.0, "humidity": 45.5,
         "pressure": 1013.25},  # above TEMP_MAX_THRESHOLD (50): an alert
        {"device_id": "schema-2", "ts": at(2), "temperature_c": 20, "humidity": -5},  # alert
    ]
    for reading in sent:
        assert iotd.post(reading).status == 202

    def visible():
        a = iotd.get("/devices/schema-1")
        b = iotd.get("/devices/schema-2")
        return (a.status == 200 and a.json()["readings"] == 2 and b.status == 200
                and len(iotd.get("/alerts").json()) == 2
                and iotd.get("/devices/schema-2/aggregates").json())
    assert eventually(visible, timeout=30), iotd.tail()

    p = schema_check(store["MONGO_URL"], store["MONGO_DB"], sent, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


# The checker itself, on documents written by hand: it accepts the documented shapes and
# rejects each kind of mismatch, so a pass above means something.

GOOD_DOCS = r"""
import datetime, sys
import pymongo
from bson.int64 import Int64
db = pymongo.MongoClient(sys.argv[1])[sys.argv[2]]
now = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000)
db.telemetry_raw.insert_one({"_id": Int64(1), "device_id": "d", "ts": now,
                             "temperature_c": 21.5, "humidity": 40, "lat": 1.5, "lon": 2.5})
db.aggregated_data.insert_one({"device_id": "d", "sensor_type": "humidity", "window": "1m",
                               "timestamp": now.replace(second=0, microsecond=0),
                               "count": Int64(2), "sum": 3.0, "min": 1.0, "max": 2.0,
                               "average": 1.5})
db.alerts.insert_one({"_id": Int64(7), "device_id": "d", "sensor_type": "temperature_c",
                      "value": 55.0, "alert_type": "threshold_high", "severity": "warning",
                      "message": "too hot", "timestamp": now, "status": "active",
                      "created_at": now})
db.telemetry_raw.create_index([("device_id", 1), ("ts", -1)])
db.alerts.create_index([("created_at", -1)])
db.aggregated_data.create_index([("device_id", 1), ("timestamp", -1)])
"""

BREAKS = [
    # (name, pymongo statement run after GOOD_DOCS, text the checker must print)
    ("ts as a string", 'db.telemetry_raw.update_one({}, {"$set": {"ts": "2026-01-02"}})',
     "'ts' should be a BSON date"),
    ("_id as an ObjectId", 'db.telemetry_raw.insert_one({"device_id": "e", "ts": now, '
     '"temperature_c": 1, "humidity": 1})', "'_id' should be an int64"),
    ("average not sum/count", 'db.aggregated_data.update_one({}, {"$set": {"average": 1.4}})',
     "!= sum/count"),
    ("alert without created_at", 'db.alerts.update_one({}, {"$unset": {"created_at": 1}})',
     "'created_at' is missing"),
    ("missing index", 'db.alerts.drop_index("created_at_-1")', "no index with key pattern"),
    ("lat without lon", 'db.telemetry_raw.update_one({}, {"$unset": {"lon": 1}})',
     "lat and lon must come together"),
]


def test_schema_check_accepts_the_documented_shapes(ferretdb, tmp_path):
    db = "checker_good"
    pymongo_run(GOOD_DOCS, ferretdb.url, db)
    sent = [{"device_id": "d", "ts": "2026-01-02T03:04:05.678Z", "temperature_c": 21.5,
             "humidity": 40, "lat": 1.5, "lon": 2.5}]
    p = schema_check(ferretdb.url, db, sent, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("name,statement,message", BREAKS, ids=[b[0] for b in BREAKS])
def test_schema_check_rejects_a_mismatch(ferretdb, name, statement, message):
    db = "checker_" + name.replace(" ", "_").replace("/", "_")
    pymongo_run(GOOD_DOCS + statement, ferretdb.url, db)
    p = schema_check(ferretdb.url, db)
    assert p.returncode == 1, p.stdout + p.stderr
    assert message in p.stdout, p.stdout


def test_schema_check_finds_what_was_sent(ferretdb, tmp_path):
    db = "checker_sent"
    pymongo_run(GOOD_DOCS, ferretdb.url, db)
    sent = [{"device_id": "d", "ts": "2026-01-02T03:04:05.678Z", "temperature_c": 22.5,
             "humidity": 40},
            {"device_id": "d", "ts": "2026-01-02T03:04:06Z", "temperature_c": 1, "humidity": 1}]
    p = schema_check(ferretdb.url, db, sent, tmp_path)
    assert p.returncode == 1
    assert "'temperature_c' = 21.5, sent 22.5" in p.stdout, p.stdout
    assert "has 'lat' though none was sent" in p.stdout, p.stdout
    assert "0 documents for the reading of 'd' at 2026-01-02T03:04:06Z" in p.stdout, p.stdout


# --- b. the store goes down and comes back ----------------------------------------------------

COUNT_DOCS = r"""
import sys
import pymongo
coll = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000)["restart"]["things"]
if sys.argv[2] == "insert":
    coll.insert_one({"value": 42})
print(coll.count_documents({}))
"""


def test_ferretdb_restart_keeps_its_port_and_data(own_ferretdb):
    url, port = own_ferretdb.url, own_ferretdb.port
    assert pymongo_run(COUNT_DOCS, url, "insert").strip() == "1"
    own_ferretdb.stop()
    assert own_ferretdb.proc.poll() is not None
    own_ferretdb.start()
    assert (own_ferretdb.url, own_ferretdb.port) == (url, port)
    assert pymongo_run(COUNT_DOCS, url, "count").strip() == "1"


def test_store_outage_loses_nothing_acknowledged_and_shows_on_ready(own_ferretdb, tmp_path):
    server = Iotd(tmp_path / "data", env={"STORE": "mongodb", "MONGO_URL": own_ferretdb.url,
                                          "MONGO_DB": "outage"}).start()
    acked, statuses = set(), []
    stop = threading.Event()

    def client():
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                r = server.post({"device_id": "outage", "temperature_c": 20.0, "humidity": 50.0,
                                 "seq": seq}, timeout=5)
            except OSError:
                statuses.append("error")
                continue
            statuses.append(r.status)
            if r.status == 202:
                acked.add(seq)
            time.sleep(0.01)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(1.0)
        own_ferretdb.stop()
        ready = []
        outage_end = time.monotonic() + 4.0
        while time.monotonic() < outage_end:
            assert server.proc.poll() is None, "iotd exited while the store was down:\n" + \
                server.tail()
            try:
                ready.append(server.get("/ready", timeout=5).status)
            except OSError:
                ready.append("error")
            time.sleep(0.1)
        own_ferretdb.start()  # the same port and data
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    try:
        assert 503 in ready, f"/ready never answered 503 during the outage: {ready}"
        assert server.proc.poll() is None, server.tail()
        assert set(statuses) <= {202, 503}, set(statuses)
        assert len(acked) > 50

        assert eventually(lambda: server.get("/ready").status == 200, timeout=30), server.tail()

        # The bus is ordered: once a reading posted after all the others is stored, so are they.
        assert server.post({"device_id": "sentinel", "temperature_c": 0,
                            "humidity": 0}).status == 202
        assert eventually(lambda: server.get("/devices/sentinel").status == 200, timeout=60), \
            server.tail()
        stored = [row["seq"] for row in all_telemetry(server, "outage")]
        assert len(stored) == len(set(stored)), "a reading was stored twice"
        missing = acked - set(stored)
        assert not missing, f"{len(missing)} acknowledged readings lost"
        assert server.get("/devices/outage").json()["readings"] == len(stored)
    finally:
        server.stop()


# --- c. device ids are literal, never operators or patterns (both stores) --------------------

def test_operator_like_device_ids_are_rejected_and_ids_match_literally(iotd):
    r = iotd.post({"device_id": "a.b$c", "temperature_c": 1, "humidity": 1})
    assert r.status == 422 and r.json()["field"] == "device_id", r.body
    r = iotd.post({"device_id": {"$gt": ""}, "temperature_c": 1, "humidity": 1})
    assert r.status == 422 and r.json()["field"] == "device_id", r.body

    for i in range(2):
        assert iotd.post({"device_id": "a.b", "ts": at(i), "temperature_c": 55.0 + i,
                          "humidity": 1}).status == 202
    assert iotd.post({"device_id": "axb", "temperature_c": 20, "humidity": 1}).status == 202
    assert eventually(lambda: iotd.get("/devices/axb").status == 200
                      and iotd.get("/devices/a.b").json().get("readings") == 2)

    got = iotd.get("/devices/a.b")
    assert got.status == 200 and got.json()["device_id"] == "a.b"
    rows = iotd.get("/devices/a.b/telemetry").json()
    assert [row["device_id"] for row in rows] == ["a.b", "a.b"]

    operator = "%7B%22%24gt%22%3A%22%22%7D"  # {"$gt":""}
    for path in (f"/devices/{operator}", f"/devices/{operator}/telemetry",
                 f"/devices/{operator}/aggregates", "/devices/a.b%24c", "/devices/a.c",
                 "/devices/a.c/telemetry", "/devices/a.", "/devices/a.%2A", "/devices/.%2A"):
        r = iotd.get(path)
        assert r.status == 404, (path, r.body)
        assert r.json()["error"] == "device_not_found", (path, r.body)

    assert [a["device_id"] for a in iotd.get("/alerts?device_id=a.b").json()] == ["a.b"]
    for device in (operator, "a.c", "a.%2A", "%2E%2A"):
        assert iotd.get(f"/alerts?device_id={device}").json() == [], device

    def ids(query):
        r = iotd.get("/devices" + query)
        assert r.status == 200, (query, r.body)
        return [d["device_id"] for d in r.json()]
    assert ids("") == ["a.b", "axb"]
    assert ids("?prefix=a.") == ["a.b"]  # a literal prefix, not the pattern /^a./
    for prefix in ("%2E%2A", "a.%2A", "%5Ea", "%24", operator):
        assert ids(f"?prefix={prefix}") == [], prefix


# --- d. a separate dashboard process on the same database ------------------------------------

@pytest.mark.parametrize("store", ["mongodb"], indirect=True)
def test_a_separate_dashboard_process_serves_what_iotd_all_wrote(iotd, store, tmp_path):
    for i in range(5):
        assert iotd.post({"device_id": "dash-1", "ts": at(i), "temperature_c": 20 + i,
                          "humidity": 40}).status == 202
    assert eventually(lambda: len(iotd.get("/devices/dash-1/telemetry").json() or []) == 5
                      if iotd.get("/devices/dash-1/telemetry").status == 200 else False)

    env = dict(os.environ)
    env.update(store)
    env.update({"DASHBOARD_PORT": "0", "BIND_ADDRESS": "127.0.0.1", "DATA_DIR": str(tmp_path / "d2")})
    log = open(tmp_path / "dashboard.log", "wb")
    proc = subprocess.Popen([IOTD, "dashboard"], env=env, stdout=log, stderr=log)
    try:
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            for line in (tmp_path / "dashboard.log").read_text().splitlines():
                try:
                    msg = json.loads(line)["msg"]
                except (ValueError, KeyError):
                    continue
                if msg.startswith("dashboard listening on port "):
                    port = int(msg.rsplit(" ", 1)[1])
            time.sleep(0.05)
        assert port, (tmp_path / "dashboard.log").read_text()
        base = f"http://127.0.0.1:{port}"
        assert eventually(lambda: request("GET", base + "/ready").status == 200)
        theirs = request("GET", base + "/devices/dash-1/telemetry").json()
        ours = iotd.get("/devices/dash-1/telemetry").json()
        assert theirs == ours and len(theirs) == 5
        assert request("GET", base + "/stats").json()["total_telemetry"] == 5
        assert request("GET", base + "/devices/dash-1/aggregates").json() == \
            iotd.get("/devices/dash-1/aggregates").json()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
