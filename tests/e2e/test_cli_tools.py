"""`iotd health` (the container health check) and `iotd options` (the option list that the
deployment tests check manifests against), against the real binary."""
import http.server
import json
import socket
import subprocess
import threading
import time

import pytest

from conftest import IOTD, Iotd, store_env  # noqa: F401  (store_env: Iotd's data_dir registry)


def run(*args, env=None, timeout=20):
    return subprocess.run([IOTD, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sqlite_iotd(tmp_path):
    server = Iotd(tmp_path / "data", env={"STORE": "sqlite"}).start()
    yield server
    server.stop()


def test_health_finds_the_roles_ports_from_the_environment(sqlite_iotd):
    env = {"INGEST_PORT": str(sqlite_iotd.ingest_port),
           "DASHBOARD_PORT": str(sqlite_iotd.dashboard_port),
           "AGGREGATOR_PORT": str(free_port()), "ALERTS_PORT": str(free_port())}
    r = run("health", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": healthy (200 OK)") == 2
    assert r.stdout.count(": not listening") == 2


def test_health_with_urls(sqlite_iotd):
    r = run("health", sqlite_iotd.dash("/health"), sqlite_iotd.ingest("/ready"))
    assert r.returncode == 0, r.stdout


def test_health_fails_when_nothing_listens():
    r = run("health", f"http://127.0.0.1:{free_port()}/health")
    assert r.returncode == 1
    assert "no iotd listener answered" in r.stdout


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_GET(self):  # noqa: N802
        body = b'{"status":"starting"}'
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_health_fails_when_a_listener_is_unhealthy(sqlite_iotd):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        bad = f"http://127.0.0.1:{server.server_port}/health"
        r = run("health", sqlite_iotd.dash("/health"), bad)
        assert r.returncode == 1
        assert f"{bad}: UNHEALTHY (503 Service Unavailable)" in r.stdout
    finally:
        server.shutdown()
        server.server_close()


def test_health_gives_up_on_a_listener_that_never_answers():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection (backlog) and never says a word
    try:
        start = time.monotonic()
        r = run("health", "--timeout", "500ms",
                f"http://127.0.0.1:{silent.getsockname()[1]}/health")
        assert r.returncode == 1 and "UNHEALTHY" in r.stdout
        assert time.monotonic() - start < 5
    finally:
        silent.close()


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:8001/health", "http://127.0.0.1:port/x",
                                 "127.0.0.1:8001"])
def test_health_rejects_urls_it_cannot_probe(url):
    r = run("health", url)
    assert r.returncode == 2 and "iotd health:" in r.stderr


def test_options_lists_every_role_with_its_variables():
    roles = json.loads(run("options", "--json").stdout)["roles"]
    assert {"all", "ingest", "aggregator", "alerts", "dashboard", "dlq replay", "loadgen",
            "health"} <= set(roles)
    env = lambda role: {o["env"] for o in roles[role] if o["env"]}  # noqa: E731
    # The seed's variables, where the seed's services read them.
    assert {"KAFKA_BOOTSTRAP_SERVERS", "TELEMETRY_TOPIC", "DLQ_TOPIC"} <= env("ingest")
    assert {"MONGO_URL", "MONGO_DB", "MAX_RETRIES"} <= env("aggregator")
    assert {"TEMP_MIN_THRESHOLD", "TEMP_MAX_THRESHOLD", "HUMIDITY_MIN_THRESHOLD",
            "HUMIDITY_MAX_THRESHOLD"} <= env("alerts")
    assert "STORE" not in env("ingest")
    # The dashboard reads the bus only for its live stream: where, not how to write to it.
    assert {"BUS", "KAFKA_BOOTSTRAP_SERVERS", "TELEMETRY_TOPIC", "STREAM_MAX_CLIENTS",
            "UI_STALE_AFTER"} <= env("dashboard")
    assert not {"SYNC", "DLQ_TOPIC", "MAX_RETRIES", "BUS_MAX_PENDING"} & env("dashboard")
    assert {"INGEST_PORT", "DASHBOARD_PORT"} <= env("all") and "AGGREGATOR_PORT" not in env("all")
    text = run("options").stdout
    assert "ingest       --kafka-bootstrap-servers" in text


def test_every_listed_default_is_accepted(tmp_path):
    """`iotd all` started with every variable `iotd options` lists for it, set to the listed
    default (ports and paths aside), starts and gets ready: the list is what the binary reads."""
    roles = json.loads(run("options", "--json").stdout)["roles"]
    env = {o["env"]: o["default"] for o in roles["all"] if o["env"]}
    assert len(env) > 30
    overrides = {"INGEST_PORT": "0", "DASHBOARD_PORT": "0", "BIND_ADDRESS": "127.0.0.1",
                 "DATA_DIR": str(tmp_path / "data")}
    server = Iotd(tmp_path / "data", env={**env, **overrides}).start()
    try:
        assert server.get("/health").status == 200
    finally:
        assert server.stop() == 0
