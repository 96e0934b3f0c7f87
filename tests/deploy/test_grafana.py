"""deploy/grafana: the dashboard JSON is well formed for Grafana, every query is valid PromQL
(parsed by promtool), and the provisioning matches docker-compose.yml's monitoring profile.
That every metric it uses is one iotd exports is checked against the running binary in
tests/e2e/test_metrics.py."""
import json
import re
import subprocess

import pytest
import yaml

from conftest import REPO

DASHBOARD = REPO / "deploy/grafana/iotd-dashboard.json"


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD.read_text())


def queries(dashboard):
    return [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row"
            for t in p["targets"]]


def test_layout(dashboard):
    assert dashboard["uid"] == "iotd-overview" and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for dx in range(g["w"]):
            for dy in range(g["h"]):
                cell = (g["x"] + dx, g["y"] + dy)
                assert cell not in cells, f"{p['title']} overlaps another panel"
                cells.add(cell)
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert names == {"datasource", "job", "instance"}


def test_every_query_is_promql(dashboard, tmp_path):
    # Grafana's variables, as Grafana substitutes them, then promtool parses each expression as
    # a recording rule.
    rules = []
    for i, (title, expr) in enumerate(queries(dashboard)):
        assert 'job=~"$job"' in expr and 'instance=~"$instance"' in expr, title
        expr = expr.replace("$__rate_interval", "1m").replace("$job", ".*") \
                   .replace("$instance", ".*")
        rules.append({"record": f"iotd:grafana_query_{i}", "expr": expr})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout


def test_promtool_catches_a_broken_query(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "x:y", "expr": "sum by (job (rate(up[1m]))"}]}]}))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0


def test_provisioned_by_the_compose_monitoring_profile():
    config = yaml.safe_load(subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "--profile", "monitoring",
         "config"], capture_output=True, text=True, timeout=60, check=True, cwd=REPO).stdout)
    grafana = config["services"]["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    mounts = {}
    for v in grafana["volumes"]:
        if isinstance(v, dict):
            mounts[v["target"]] = v.get("source", "")
        else:
            source, target = v.split(":")[:2]
            mounts[target] = source
    dashboards = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/iotd.yml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    assert str(DASHBOARD) == mounts[f"{folder}/iotd-dashboard.json"]
    sources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    url = sources["datasources"][0]["url"]
    assert re.fullmatch(r"http://prometheus:9090", url) and "prometheus" in config["services"]
