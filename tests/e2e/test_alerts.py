"""One alert per episode: opened by the first violation, updated by the next, resolved by a
return to range; rules from the seed's thresholds and from RULES_FILE."""
import datetime

from conftest import Iotd, eventually


def at(seconds):
    t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    return (t + datetime.timedelta(seconds=seconds)).isoformat()


def alerts(server, query=""):
    return server.get("/alerts" + query).json()


def test_alert_lifecycle_active_then_updated_then_resolved(iotd):
    iotd.post({"device_id": "hot", "ts": at(0), "temperature_c": 55.0, "humidity": 50})
    got = eventually(lambda: alerts(iotd, "?status=active"))
    assert len(got) == 1
    a = got[0]
    assert (a["device_id"], a["sensor_type"], a["alert_type"], a["severity"], a["status"]) == (
        "hot", "temperature_c", "threshold_high", "warning", "active")
    assert a["value"] == 55.0 and a["count"] == 1 and a["threshold"] == 50
    assert a["resolved_at"] is None and a["message"]

    iotd.post({"device_id": "hot", "ts": at(1), "temperature_c": 57.0, "humidity": 50})
    assert eventually(lambda: alerts(iotd, "?status=active")[0]["count"] == 2)
    assert alerts(iotd, "?status=active")[0]["value"] == 57.0

    iotd.post({"device_id": "hot", "ts": at(2), "temperature_c": 20.0, "humidity": 50})
    resolved = eventually(lambda: alerts(iotd, "?status=resolved"))
    assert len(resolved) == 1 and resolved[0]["id"] == a["id"]
    assert resolved[0]["resolved_at"] is not None
    assert alerts(iotd, "?status=active") == []
    assert len(alerts(iotd)) == 1
    assert iotd.get("/stats").json()["active_alerts"] == 0


def test_low_humidity_and_recent(iotd):
    iotd.post({"device_id": "dry", "temperature_c": 20, "humidity": -5})
    got = eventually(lambda: iotd.get("/alerts/recent").json())
    assert got[0]["alert_type"] == "threshold_low" and got[0]["sensor_type"] == "humidity"
    assert iotd.get("/alerts/recent?minutes=1").status == 200


def test_thresholds_from_the_environment(data_dir):
    server = Iotd(data_dir, env={"TEMP_MAX_THRESHOLD": "30"}).start()
    try:
        server.post({"device_id": "warm", "temperature_c": 35, "humidity": 50})
        assert eventually(lambda: alerts(server, "?status=active"))
    finally:
        server.stop()


def test_rules_file_with_for_and_hysteresis(data_dir, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("""
rules:
  - sensor: pressure
    max: 1100
    severity: critical
    for: 10s
    hysteresis: 5
""")
    server = Iotd(data_dir, env={"RULES_FILE": str(rules)}).start()
    try:
        def send(sec, p):
            r = server.post({"device_id": "p1", "ts": at(sec), "temperature_c": 20, "humidity": 50,
                             "pressure": p})
            assert r.status == 202
        send(0, 1200)
        send(5, 1200)
        # Pending for 10 s: listed only when asked for, not yet active.
        assert eventually(lambda: [a for a in alerts(server, "?status=pending") if a["count"] == 2])
        assert alerts(server, "?status=active") == []
        assert alerts(server) == []
        send(11, 1150)
        got = eventually(lambda: alerts(server, "?status=active"))
        assert got[0]["severity"] == "critical" and got[0]["count"] == 3
        send(12, 1098)  # inside [min, max] but not below max - hysteresis: still active
        send(13, 1090)  # resolves
        assert eventually(lambda: alerts(server, "?status=resolved"))
    finally:
        server.stop()


def test_alerts_survive_restart_without_duplicates(data_dir):
    server = Iotd(data_dir).start()
    server.post({"device_id": "r", "ts": at(0), "temperature_c": 60, "humidity": 50})
    assert eventually(lambda: alerts(server, "?status=active"))
    server.stop()
    server = Iotd(data_dir).start()
    try:
        server.post({"device_id": "r", "ts": at(1), "temperature_c": 61, "humidity": 50})
        assert eventually(lambda: alerts(server, "?status=active")[0]["count"] == 2)
        assert len(alerts(server)) == 1
    finally:
        server.stop()


def test_invalid_rules_file_fails_at_start(data_dir, tmp_path):
    import os
    import subprocess
    from conftest import IOTD, store_env
    rules = tmp_path / "bad.yaml"
    rules.write_text("rules:\n  - sensor: x\n    min: 5\n    max: 1\n")
    env = dict(os.environ, **store_env(data_dir), DATA_DIR=str(data_dir), RULES_FILE=str(rules),
               INGEST_PORT="0", DASHBOARD_PORT="0", BIND_ADDRESS="127.0.0.1")
    p = subprocess.run([IOTD, "all"], env=env, capture_output=True, timeout=20)
    assert p.returncode != 0
