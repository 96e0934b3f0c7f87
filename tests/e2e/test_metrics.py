"""Every port's /metrics is valid Prometheus text, checked by the real promtool."""
import json
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


def metric_names(expr):
    """The metric names a PromQL expression reads (label matchers, ranges and strings removed)."""
    import re

    expr = re.sub(r"\{[^}]*\}|\[[^]]*\]|\"[^\"]*\"", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return words - {"up", "rate", "increase", "max", "by", "or", "and", "job", "instance", "sum",
                    "histogram_quantile", "le", "server", "route", "status", "reason",
                    "partition", "cause"}


# Exported only with BUS=kafka, or with a retention set (both registered in src/app/run.cc); the
# embedded `iotd all` here exports the rest.
CONDITIONAL = {"kafka_producer_pending_messages", "store_expired_total"}


def test_shipped_alerting_rules_and_dashboard_use_metrics_iotd_exports(iotd):
    """deploy/prometheus/rules.yml and deploy/grafana/iotd-dashboard.json name only metrics iotd
    really exports (a renamed metric would silently disable an alert or blank a panel)."""
    import re

    import yaml

    from conftest import ROOT

    exported = set()
    for url in (iotd.ingest("/metrics"), iotd.dash("/metrics")):
        text = request("GET", url).body.decode()
        for family in re.findall(r"^# TYPE (\w+) (\w+)", text, re.M):
            name, kind = family
            exported.add(name)
            if kind == "histogram":
                exported |= {name + "_bucket", name + "_sum", name + "_count"}
    assert CONDITIONAL.isdisjoint(exported)
    assert all(f'"{m}"' in (ROOT / "src/app/run.cc").read_text() for m in CONDITIONAL)
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    dashboard = json.loads((ROOT / "deploy/grafana/iotd-dashboard.json").read_text())
    sources = {
        "rules.yml": [r["expr"] for g in rules["groups"] for r in g["rules"]],
        "iotd-dashboard.json": [t["expr"] for p in dashboard["panels"] if p["type"] != "row"
                                for t in p["targets"]],
    }
    for source, exprs in sources.items():
        used = set().union(*(metric_names(e) for e in exprs))
        assert used, f"no metric found in {source}"
        unknown = used - exported - CONDITIONAL
        assert not unknown, f"{source} uses metrics iotd does not export: {sorted(unknown)}"
