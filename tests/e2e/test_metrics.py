"""Every port's /metrics is valid Prometheus text, checked by the real promtool."""
import shutil
import subprocess

from conftest import eventually, request


def promtool_check(text):
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is required"
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode()


def test_metrics_on_both_ports_pass_promtool(iotd):
    iotd.post({"device_id": "m", "temperature_c": 1, "humidity": 1})
    iotd.post({"device_id": 5}, timeout=5)
    assert eventually(lambda: iotd.get("/stats").json()["total_telemetry"] == 1)
    for url in (iotd.ingest("/metrics"), iotd.dash("/metrics")):
        r = request("GET", url)
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        code, out = promtool_check(r.body)
        assert code == 0, out
        text = r.body.decode()
        for name in ("http_requests_total", "http_request_duration_seconds_bucket",
                     "ingest_readings_accepted_total", "ingest_readings_rejected_total",
                     "bus_group_commit_messages_bucket", "aggregator_records_total",
                     "alerts_records_total", "aggregator_consumer_lag",
                     "process_resident_memory_bytes"):
            assert name in text, name


def test_the_shipped_alerting_rules_use_metrics_iotd_exports(iotd):
    """deploy/prometheus/rules.yml names only metrics that iotd really exports (a renamed metric
    would silently disable an alert)."""
    import re

    import yaml

    from conftest import ROOT

    exported = set()
    for url in (iotd.ingest("/metrics"), iotd.dash("/metrics")):
        exported |= set(re.findall(r"^# TYPE (\w+) ", request("GET", url).body.decode(), re.M))
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    used = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            expr = re.sub(r"\{[^}]*\}|\[[^]]*\]|\"[^\"]*\"", "", rule["expr"])
            names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
            used |= names - {"up", "rate", "increase", "max", "by", "or", "and", "job",
                             "instance", "sum"}
    assert used, "no metric found in the rules"
    assert used <= exported, f"not exported by iotd: {sorted(used - exported)}"
