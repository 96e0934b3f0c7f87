"""The OpenAPI documents (/openapi.json) and the interactive docs (/docs) of both APIs.

One `iotd all` (SQLite store) serves the module, with a few readings ingested first (one hot
enough to open an alert) so that lists are not all empty. schemathesis (PyPI) then runs against
each port's own document with a bounded number of examples per operation, checking that nothing
answers 5xx and that every status code, content type and body is the one the document declares.
A deliberately wrong copy of the dashboard document shows that such a run does fail.

(That each document lists exactly the routes its port registers is checked against the route
tables in tests/unit/services/api_docs_test.cc.)
"""
import copy
import json
import os
import re
import subprocess
import sys
import urllib.parse

import pytest
from openapi_spec_validator import validate

from conftest import Iotd, eventually, request

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")
MAX_EXAMPLES = int(os.environ.get("IOTD_SCHEMATHESIS_EXAMPLES", "30"))
SEED = os.environ.get("IOTD_SCHEMATHESIS_SEED", "1")

INGEST_ROUTES = {
    ("post", "/ingest"), ("post", "/ingest/batch"),
}
DASHBOARD_ROUTES = {
    ("get", p) for p in ("/", "/telemetry", "/aggregated", "/alerts", "/alerts/recent", "/devices",
                         "/devices/{device_id}", "/devices/{device_id}/telemetry",
                         "/devices/{device_id}/aggregates", "/stats", "/dlq", "/alerts/{alert_id}",
                         "/stream", "/ui", "/ui/{file}", "/ui/config.json")
} | {("post", "/alerts/{alert_id}/ack")}
OPS_ROUTES = {("get", p) for p in ("/health", "/ready", "/metrics", "/openapi.json", "/docs",
                                   "/docs/{file}")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    iotd = Iotd(tmp_path_factory.mktemp("openapi") / "data", env={"STORE": "sqlite"}).start()
    try:
        for i, temp in enumerate((21, 22, 80)):
            r = iotd.post({"device_id": f"dev-{i}", "temperature_c": temp, "humidity": 40,
                           "lat": 52.1, "lon": 4.3})
            assert r.status == 202, r.body
        assert eventually(lambda: len(request("GET", iotd.dash("/devices")).json()) == 3)
        assert eventually(lambda: request("GET", iotd.dash("/alerts")).json())
        yield iotd
    finally:
        iotd.stop()


def ports(server):
    return {"ingest": server.ingest(), "dashboard": server.dash()}


def document(base):
    r = request("GET", base + "/openapi.json")
    assert r.status == 200, r.body
    assert r.headers["Content-Type"] == "application/json"
    return r, json.loads(r.body)


def operations(doc):
    return {(m, p) for p, item in doc["paths"].items() for m in item
            if m in ("get", "put", "post", "delete", "patch", "head", "options", "trace")}


def test_each_port_serves_a_valid_openapi_document_of_its_own_routes(server):
    docs = {}
    for name, base in ports(server).items():
        r, doc = document(base)
        validate(doc)  # raises on an invalid OpenAPI 3 document
        assert doc["openapi"].startswith("3.")
        docs[name] = doc
        # Revalidation: the same ETag gives 304 without a body.
        etag = r.headers["ETag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        again = request("GET", base + "/openapi.json", headers={"If-None-Match": etag})
        assert again.status == 304 and again.body == b""
    assert operations(docs["ingest"]) == INGEST_ROUTES | OPS_ROUTES
    assert operations(docs["dashboard"]) == DASHBOARD_ROUTES | OPS_ROUTES
    assert docs["ingest"]["info"]["title"] != docs["dashboard"]["info"]["title"]


def test_docs_page_loads_swagger_ui_from_its_own_port_only(server):
    for base in ports(server).values():
        page = request("GET", base + "/docs")
        assert page.status == 200
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        html = page.body.decode()
        assert "swagger-ui" in html
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert len(refs) == 3, refs
        init = None
        for ref in refs:
            url = urllib.parse.urljoin(base + "/docs", ref)
            assert url.startswith(base + "/docs/"), url
            r = request("GET", url)
            assert r.status == 200, url
            want = "text/css" if ref.endswith(".css") else "text/javascript"
            assert r.headers["Content-Type"].split(";")[0] == want, url
            assert r.headers["Cache-Control"] == "no-cache"
            assert len(r.body) > 100
            again = request("GET", url, headers={"If-None-Match": r.headers["ETag"]})
            assert again.status == 304 and again.body == b"", url
            changed = request("GET", url, headers={"If-None-Match": '"stale"'})
            assert changed.status == 200 and changed.body == r.body
            if ref.endswith("init.js"):
                init = r.body.decode()
        # Nothing is fetched from elsewhere: no absolute URL in the page or the start-up script,
        # which points Swagger UI at this port's document.
        assert init is not None and '"openapi.json"' in init
        assert not re.search(r"https?://", html + init), html + init
        missing = request("GET", base + "/docs/nothing.js")
        assert missing.status == 404 and missing.json()["error"] == "not_found"


def schemathesis(location, *args, cwd, timeout=120):
    """Runs the schemathesis CLI of this python3; returns (exit code, output)."""
    env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks",
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
    # One worker: with two, hypothesis describes strategies with ast.parse from two threads at
    # once, which CPython 3.11 before 3.11.8 answers with "SystemError: AST constructor
    # recursion depth mismatch" (python/cpython#106905), a runtime error of the tool itself.
    cmd = [sys.executable, "-c",
           "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
           "run", location, "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES),
           "--seed", SEED, "--workers", "1", "--generation-database", "none", "--no-color",
           # GET /stream never ends by itself (tests/e2e/test_stream.py covers it).
           "--exclude-path", "/stream",
           *args]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("port", ["ingest", "dashboard"])
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(server, port,
                                                                               tmp_path):
    base = ports(server)[port]
    code, out = schemathesis(base + "/openapi.json", cwd=tmp_path)
    assert code == 0, out
    assert re.search(r"\d+ generated, \d+ passed", out), out
    # iotd is still up and answering after the run.
    assert request("GET", base + "/health").status == 200


def test_schemathesis_fails_on_a_document_that_does_not_match(server, tmp_path):
    _, doc = document(server.dash())
    broken = copy.deepcopy(doc)
    # The server answers a bad `limit` with 422 and an alert's count is an integer.
    del broken["paths"]["/telemetry"]["get"]["responses"]["422"]
    broken["components"]["schemas"]["Alert"]["properties"]["count"]["type"] = "string"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    code, out = schemathesis(str(path), "--url", server.dash() + "/", "--include-path-regex",
                             "^/(telemetry|alerts)$", cwd=tmp_path)
    assert code != 0, out
    assert "Undocumented status code" in out, out
    assert "Response violates schema" in out, out
