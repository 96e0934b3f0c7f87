"""Alert notifications against real receivers (docs/notifications.md): a webhook receiver gets
the documented body when an alert opens and when it resolves, a receiver that fails at first
gets it after retries, and Debian's prometheus-alertmanager receives the alert (checked through
its own API), keeps it across its own restart (iotd re-posts active alerts) and sees it
resolved.

These tests use the SQLite store only (notifications do not depend on the store)."""
import datetime
import http.server
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import Iotd, eventually, request
from test_metrics import promtool_check

ALERTMANAGER = os.environ.get("ALERTMANAGER", "/usr/bin/prometheus-alertmanager")


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with statuses[n] for the
    n-th request (200 once the list is exhausted)."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests = []  # (path, content_type, body bytes)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    n = len(receiver.requests)
                    receiver.requests.append((self.path, self.headers.get("Content-Type"), body))
                status = receiver.statuses[n] if n < len(receiver.statuses) else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def bodies(self):
        with self.lock:
            return [json.loads(b) for _, _, b in self.requests]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def started(tmp_path):
    """Starts Iotd servers (SQLite store) and stops every one at the end."""
    servers = []

    def start(env):
        server = Iotd(tmp_path / "data", env={"STORE": "sqlite", **env}).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def metric(server, series):
    text = request("GET", server.dash("/metrics")).body.decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def test_webhook_gets_opened_then_resolved(started):
    with WebhookReceiver() as hook:
        server = started({"NOTIFY_WEBHOOK_URLS": hook.url})
        server.post({"device_id": "hook-dev", "ts": now_iso(), "temperature_c": 55.0,
                     "humidity": 50})
        assert eventually(lambda: len(hook.bodies()) >= 1), server.tail()
        server.post({"device_id": "hook-dev", "ts": now_iso(), "temperature_c": 56.0,
                     "humidity": 50})  # an update of the open alert: not notified
        server.post({"device_id": "hook-dev", "ts": now_iso(), "temperature_c": 20.0,
                     "humidity": 50})
        assert eventually(lambda: len(hook.bodies()) >= 2), server.tail()
        time.sleep(0.5)  # nothing else arrives
        bodies = hook.bodies()
        assert [b["event"] for b in bodies] == ["opened", "resolved"]
        path, content_type, _ = hook.requests[0]
        assert path == "/hook" and content_type == "application/json"
        opened, resolved = bodies
        assert set(opened) == {"version", "event", "previous_severity", "alert", "sent_at"}
        assert opened["version"] == 1 and opened["previous_severity"] is None
        assert datetime.datetime.fromisoformat(opened["sent_at"].replace("Z", "+00:00"))
        a = opened["alert"]
        assert (a["device_id"], a["sensor_type"], a["alert_type"], a["status"], a["value"],
                a["count"], a["resolved_at"]) == ("hook-dev", "temperature_c", "threshold_high",
                                                  "active", 55.0, 1, None)
        # The resolved body carries the alert exactly as GET /alerts lists it.
        listed = server.get("/alerts?status=resolved").json()
        assert resolved["alert"] == listed[0]
        assert resolved["alert"]["id"] == a["id"] and resolved["alert"]["count"] == 2
        assert metric(server, 'notifications_sent_total{sink="webhook1"}') == 2
        assert metric(server, 'notifications_failed_total{sink="webhook1"}') == 0
        assert metric(server, 'notifications_dropped_total{sink="webhook1"}') == 0


def test_webhook_that_fails_at_first_gets_it_after_retries(started):
    with WebhookReceiver(statuses=[503, 503]) as flaky, WebhookReceiver() as healthy:
        server = started({"NOTIFY_WEBHOOK_URLS": f"{flaky.url},{healthy.url}"})
        server.post({"device_id": "retry-dev", "ts": now_iso(), "temperature_c": 70.0,
                     "humidity": 50})
        assert eventually(lambda: len(flaky.requests) >= 3, timeout=20), server.tail()
        # The healthy receiver is not held up by the failing one.
        assert len(healthy.requests) == 1
        time.sleep(0.5)
        assert len(flaky.requests) == 3  # 503, 503, then 200: delivered, not sent again
        bodies = flaky.bodies()
        assert bodies[0]["alert"] == bodies[2]["alert"] and bodies[2]["event"] == "opened"
        assert metric(server, 'notifications_retries_total{sink="webhook1"}') == 2
        assert metric(server, 'notifications_sent_total{sink="webhook1"}') == 1
        assert metric(server, 'notifications_sent_total{sink="webhook2"}') == 1
        code, out = promtool_check(request("GET", server.dash("/metrics")).body)
        assert code == 0, out
        log = server.tail(200)
        assert "retry 1 of 5" in log and "after 2 retries" in log


def test_bad_notification_url_is_refused_at_start_up(tmp_path):
    from conftest import IOTD
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), INGEST_PORT="0", DASHBOARD_PORT="0",
               NOTIFY_WEBHOOK_URLS="https://example.org/hook")
    p = subprocess.run([IOTD, "all"], env=env, capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "NOTIFY_WEBHOOK_URLS" in p.stdout + p.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Alertmanager:
    """Debian's prometheus-alertmanager on 127.0.0.1:port, no clustering, a null receiver."""

    CONFIG = """route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: "null"
"""

    def __init__(self, root, port):
        self.root = pathlib.Path(root)
        self.port = port
        self.proc = None

    def start(self, storage):
        assert os.access(ALERTMANAGER, os.X_OK), (
            f"{ALERTMANAGER} is required (apt-get install prometheus-alertmanager)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "alertmanager.yml"
        config.write_text(self.CONFIG)
        self.log = open(self.root / "alertmanager.log", "ab")
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={self.root / storage}",
             "--cluster.listen-address=", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log)
        assert eventually(self._ready, timeout=20), self.tail()
        return self

    def _ready(self):
        try:
            return request("GET", self.url("/-/ready"), timeout=2).status == 200
        except OSError:
            return False

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def alerts(self, query=""):
        r = request("GET", self.url("/api/v2/alerts" + query))
        assert r.status == 200, r.body
        return r.json()

    def received(self, status):
        text = request("GET", self.url("/metrics")).body.decode()
        m = re.search(r'^alertmanager_alerts_received_total\{status="%s",version="v2"\} (\S+)$'
                      % status, text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def tail(self, n=30):
        try:
            return "\n".join((self.root / "alertmanager.log").read_text(
                errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture
def alertmanager(tmp_path):
    am = Alertmanager(tmp_path / "alertmanager", free_port())
    try:
        yield am
    finally:
        am.stop()


def iotd_alerts(am, device):
    return [a for a in am.alerts() if a["labels"].get("device_id") == device]


def test_alertmanager_receives_the_alert_keeps_it_and_sees_it_resolved(started, alertmanager):
    am = alertmanager.start("storage1")
    server = started({"ALERTMANAGER_URL": am.url(), "ALERTMANAGER_RESEND_INTERVAL": "1s"})
    server.post({"device_id": "am-dev", "ts": now_iso(), "temperature_c": 80.0, "humidity": 50})
    got = eventually(lambda: iotd_alerts(am, "am-dev"), timeout=15)
    assert len(got) == 1, server.tail()
    a = got[0]
    assert a["labels"] == {"alertname": "IotdThreshold", "device_id": "am-dev",
                           "sensor_type": "temperature_c", "severity": "warning",
                           "alert_type": "threshold_high"}
    assert a["status"]["state"] == "active"
    assert a["annotations"]["value"] == "80" and a["annotations"]["threshold"] == "50"
    stored = server.get("/alerts?status=active").json()[0]
    assert a["annotations"]["alert_id"] == stored["id"]

    # Alertmanager restarts with empty storage: iotd's periodic re-post brings the alert back.
    am.stop()
    am.start("storage2")
    assert eventually(lambda: iotd_alerts(am, "am-dev"), timeout=15), server.tail()

    # Back in range: the alert is posted with endsAt = its resolution time and leaves the
    # active list; Alertmanager counts a resolved alert received.
    server.post({"device_id": "am-dev", "ts": now_iso(), "temperature_c": 20.0, "humidity": 50})
    assert eventually(lambda: am.received("resolved") >= 1, timeout=15), server.tail()
    assert eventually(lambda: not iotd_alerts(am, "am-dev"), timeout=15), am.alerts()
    assert metric(server, 'notifications_sent_total{sink="alertmanager"}') == 2
    assert metric(server, 'notifications_failed_total{sink="alertmanager"}') == 0
    assert metric(server, 'notifications_alertmanager_resends_total{result="ok"}') >= 1
