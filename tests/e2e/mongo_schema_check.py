#!/usr/bin/python3
"""Checks, as an independent MongoDB client, what iotd wrote with STORE=mongodb: the seed's
collections, their documents' fields and BSON types, and the seed's indexes.

    /usr/bin/python3 tests/e2e/mongo_schema_check.py MONGO_URL MONGO_DB [--sent READINGS.json]

READINGS.json is a JSON list of readings as posted to /ingest (device_id, ts with at most
millisecond precision, sensors, optional lat/lon); each must be in telemetry_raw exactly once with
the same values, lat/lon present exactly when sent.

Run it with Debian's python3 (package python3-pymongo), which need not be the one running
pytest. Prints every mismatch and exits 1 if there is any; exits 2 if it cannot run.
"""
import argparse
import datetime
import json
import math
import os
import sys

try:
    import bson
    import pymongo
except ImportError as e:
    print(f"mongo_schema_check: {e}: install Debian's python3-pymongo "
          "(scripts/install-deps.sh) and run this with /usr/bin/python3", file=sys.stderr)
    sys.exit(2)

COLLECTIONS = ("telemetry_raw", "aggregated_data", "alerts")
INDEXES = {
    "telemetry_raw": [("device_id", 1), ("ts", -1)],
    "alerts": [("created_at", -1)],
    "aggregated_data": [("device_id", 1), ("timestamp", -1)],
}
RAW_FIXED = {"_id", "device_id", "ts", "lat", "lon"}


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int64(v):
    return isinstance(v, bson.int64.Int64)


def type_name(v):
    return type(v).__name__


class Checker:
    def __init__(self, db):
        self.db = db
        self.errors = []

    def fail(self, msg):
        self.errors.append(msg)

    def expect(self, coll, doc, field, check, what):
        if field not in doc:
            self.fail(f"{coll} {doc.get('_id')!r}: field {field!r} is missing")
            return False
        if not check(doc[field]):
            self.fail(f"{coll} {doc.get('_id')!r}: field {field!r} should be {what}, is "
                      f"{type_name(doc[field])} {doc[field]!r}")
            return False
        return True

    def collections(self):
        names = set(self.db.list_collection_names())
        for c in COLLECTIONS:
            if c not in names:
                self.fail(f"collection {c!r} does not exist (there are {sorted(names)})")
            elif self.db[c].count_documents({}) == 0:
                self.fail(f"collection {c!r} is empty")

    def telemetry(self):
        c = "telemetry_raw"
        for d in self.db[c].find():
            self.expect(c, d, "_id", is_int64, "an int64 (the message id)")
            self.expect(c, d, "device_id", lambda v: isinstance(v, str), "a string")
            self.expect(c, d, "ts", lambda v: isinstance(v, datetime.datetime), "a BSON date")
            self.expect(c, d, "temperature_c", is_number, "a number")
            self.expect(c, d, "humidity", is_number, "a number")
            if ("lat" in d) != ("lon" in d):
                self.fail(f"{c} {d['_id']!r}: lat and lon must come together")
            for f in ("lat", "lon"):
                if f in d:
                    self.expect(c, d, f, is_number, "a number")
            for f, v in d.items():
                if f not in RAW_FIXED and not is_number(v):
                    self.fail(f"{c} {d['_id']!r}: sensor {f!r} should be a number, is "
                              f"{type_name(v)} {v!r}")

    def aggregates(self):
        c = "aggregated_data"
        for d in self.db[c].find():
            for f in ("device_id", "sensor_type", "window"):
                self.expect(c, d, f, lambda v: isinstance(v, str), "a string")
            self.expect(c, d, "timestamp", lambda v: isinstance(v, datetime.datetime),
                        "a BSON date (the window start)")
            ok = self.expect(c, d, "count", lambda v: isinstance(v, int) and
                             not isinstance(v, bool) and v > 0, "a positive integer")
            for f in ("sum", "min", "max", "average"):
                ok = self.expect(c, d, f, is_number, "a number") and ok
            if ok:
                if not math.isclose(d["average"], d["sum"] / d["count"], rel_tol=1e-9,
                                    abs_tol=1e-9):
                    self.fail(f"{c} {d['_id']!r}: average {d['average']!r} != sum/count "
                              f"{d['sum']!r}/{d['count']!r}")
                if not d["min"] <= d["average"] <= d["max"]:
                    self.fail(f"{c} {d['_id']!r}: average {d['average']!r} outside "
                              f"[min, max] = [{d['min']!r}, {d['max']!r}]")

    def alerts(self):
        c = "alerts"
        for d in self.db[c].find():
            for f in ("device_id", "sensor_type", "alert_type", "severity", "message", "status"):
                self.expect(c, d, f, lambda v: isinstance(v, str), "a string")
            self.expect(c, d, "value", is_number, "a number")
            for f in ("timestamp", "created_at"):
                self.expect(c, d, f, lambda v: isinstance(v, datetime.datetime), "a BSON date")

    def indexes(self):
        for c, key in INDEXES.items():
            keys = [list(ix["key"].items()) for ix in self.db[c].list_indexes()]
            if key not in keys:
                self.fail(f"{c}: no index with key pattern {dict(key)} (indexes: {keys})")

    def sent(self, readings):
        c = "telemetry_raw"
        for r in readings:
            ts = parse_ts(r["ts"])
            docs = list(self.db[c].find({"device_id": r["device_id"],
                                         "ts": {"$gte": ts, "$lte": ts}}))
            where = f"reading of {r['device_id']!r} at {r['ts']}"
            if len(docs) != 1:
                self.fail(f"{c}: {len(docs)} documents for the {where}, expected 1")
                continue
            d = docs[0]
            for f, v in r.items():
                if f in ("device_id", "ts"):
                    continue
                if f not in d:
                    self.fail(f"{c}: the {where} lacks {f!r}")
                elif d[f] != v:
                    self.fail(f"{c}: the {where} has {f!r} = {d[f]!r}, sent {v!r}")
            for f in ("lat", "lon"):
                if f in d and f not in r:
                    self.fail(f"{c}: the {where} has {f!r} though none was sent")


def parse_ts(s):
    t = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    if t.tzinfo is not None:
        t = t.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return t  # pymongo compares and returns naive UTC datetimes


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("db")
    p.add_argument("--sent", help="JSON file: the readings posted, to find in telemetry_raw")
    args = p.parse_args()
    client = pymongo.MongoClient(args.url, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as e:
        print(f"mongo_schema_check: cannot reach {args.url}: {e}", file=sys.stderr)
        return 2
    checker = Checker(client[args.db])
    checker.collections()
    checker.telemetry()
    checker.aggregates()
    checker.alerts()
    checker.indexes()
    if args.sent:
        with open(args.sent) as f:
            checker.sent(json.load(f))
    for e in checker.errors:
        print("schema mismatch:", e)
    if checker.errors:
        print(f"mongo_schema_check: {len(checker.errors)} mismatches in database {args.db!r}")
        return 1
    print(f"mongo_schema_check: database {args.db!r} matches the schema")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # pymongo's monitor threads hold a normal exit for about half a second.
    os._exit(code)
