"""The web UI (/ui) in a real browser: Debian's headless Chromium, driven by playwright-core.

One `iotd all` (SQLite store) serves the module, with an hour of readings of two devices and one
device last heard from three hours ago. tests/ui/ui_check.mjs then walks the pages as a user would
and reports what it saw: the device is listed (and the old one marked stale), its charts draw
(series-coloured pixels on the canvas, raw and aggregated), an alert shows up live on the alerts
page when a hot reading arrives after the page loaded (no reload, no refetch of /alerts: over
/stream), Acknowledge marks it acknowledged in the page and in GET /alerts, and the overview shows
the numbers of /stats. A screenshot of each page is kept in build/test-logs/ui/; with
UPDATE_SCREENSHOT=1 the device page's also becomes docs/img/dashboard.png (the README's picture).

Needs /usr/bin/chromium (or $CHROMIUM) and npm; scripts/install-deps.sh installs both and
tests/ui/node_modules. A missing one fails the test, it is never skipped.
"""
import datetime
import json
import math
import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import IOTD, ROOT, Iotd, eventually, request

UI_DIR = ROOT / "tests/ui"
ARTIFACTS = ROOT / "build/test-logs/ui"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DEVICE = "ui-dev-1"
OTHER = "ui-dev-2"
OLD = "ui-old"


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def readings(now):
    """An hour of readings of DEVICE (a minute apart, in range) and OTHER, and one of OLD three
    hours ago (older than the default stale time, 300 s)."""
    out = []
    for i in range(59, -1, -1):
        t = now - datetime.timedelta(minutes=i)
        out.append({"device_id": DEVICE, "ts": iso(t),
                    "temperature_c": round(24 + 4 * math.sin(i / 8) + (i % 3) * 0.3, 1),
                    "humidity": round(50 + 6 * math.cos(i / 11), 1)})
        if i % 5 == 1:
            out.append({"device_id": OTHER, "ts": iso(t), "temperature_c": 18 + i % 3,
                        "humidity": 55, "pressure": 1013 + i % 4})
    out.append({"device_id": OLD, "ts": iso(now - datetime.timedelta(hours=3)),
                "temperature_c": 21, "humidity": 50})
    return out


def install_playwright():
    if (UI_DIR / "node_modules/playwright-core/package.json").is_file():
        return
    if shutil.which("npm") is None:
        pytest.fail("npm not found: run scripts/install-deps.sh", pytrace=False)
    subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund",
                    "--loglevel=error"], cwd=UI_DIR, check=True, timeout=300)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    iotd = Iotd(tmp_path_factory.mktemp("ui") / "data", env={"STORE": "sqlite"}).start()
    try:
        batch = readings(datetime.datetime.now(datetime.timezone.utc))
        r = iotd.post(batch, path="/ingest/batch")
        assert r.status == 202 and r.json()["accepted"] == len(batch), r.body
        assert eventually(lambda: iotd.get("/stats").json()["total_telemetry"] == len(batch))
        # The 1m aggregates the 24h chart shows, and the device view's starting point.
        assert eventually(lambda: iotd.get(
            f"/devices/{DEVICE}/aggregates?window=1m&sensor_type=temperature_c&limit=1000").json())
        assert not iotd.get(f"/alerts?device_id={DEVICE}").json()
        yield iotd
    finally:
        iotd.stop()


def test_the_dashboard_pages_work_in_a_browser(server):
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} not found: run scripts/install-deps.sh"
    page = server.get("/ui")
    assert page.status == 200, page.body
    install_playwright()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()

    env = dict(os.environ, IOTD_DASHBOARD_URL=server.dash(), IOTD_INGEST_URL=server.ingest(),
               UI_DEVICE=DEVICE, UI_STALE_DEVICE=OLD, UI_ARTIFACTS_DIR=str(ARTIFACTS),
               CHROMIUM=CHROMIUM)
    proc = subprocess.run(["node", str(UI_DIR / "ui_check.mjs")], cwd=UI_DIR, env=env,
                          capture_output=True, text=True, timeout=240)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"ui_check.mjs printed nothing (exit {proc.returncode}):\n{proc.stderr}"
    result = json.loads(lines[-1])
    (ARTIFACTS / "result.json").write_text(json.dumps(result, indent=2))
    assert proc.returncode == 0 and "failed" not in result, \
        f"{result.get('failed')}\n{json.dumps(result, indent=2)}\n{proc.stderr}\n{server.tail()}"
    checks = result["checks"]

    # Devices: listed with latest values; the filter narrows to one; the old one is stale and
    # the fresh one is not.
    assert "temperature_c" in checks["device_row_text"], checks
    assert checks["filter_rows"] == 1
    assert checks["stale_marked"] and not checks["fresh_device_marked_stale"]

    # Device page: a chart per sensor, each with its series drawn, raw and aggregated.
    for name in ("raw_charts", "aggregate_charts"):
        charts = {c["sensor"]: c for c in checks[name]}
        assert set(charts) == {"humidity", "temperature_c"}, checks[name]
        assert all(c["pixels"] > 0 and c["points"] > 0 for c in charts.values()), checks[name]
    assert {c["sensor"]: c["points"] for c in checks["raw_charts"]}["temperature_c"] == 60
    # A reading that arrives while the page is open is added to every chart.
    assert checks["live_points"]["after"] == [n + 1 for n in checks["live_points"]["before"]]

    # Alerts: the hot reading's alert arrived over the stream, without reload or refetch.
    assert checks["active_alerts_before"] == 0
    assert checks["alert_live_without_reload"] is True
    assert checks["alert_refetches"] == 0, checks
    assert "temperature_c" in checks["alert_row_text"] and "80" in checks["alert_row_text"]

    # Acknowledge: shown in the page, stored by the server.
    assert checks["acknowledged_in_ui"] and checks["acknowledged_in_api"]
    alerts = server.get(f"/alerts?device_id={DEVICE}").json()
    acked = [a for a in alerts if a["id"] == checks["acknowledged_alert_id"]]
    assert acked and acked[0]["acknowledged"] is True and acked[0]["acknowledged_at"], alerts

    # Overview: the numbers of /stats (compared by the script once both agreed).
    overview = checks["overview"]
    # the batch and the script's two readings
    assert overview["shown"]["overview-total-telemetry"] == len(readings(
        datetime.datetime.now(datetime.timezone.utc))) + 2
    assert overview["devices_total"] == 3
    assert overview["shown"]["overview-active-alerts"] >= 1

    # Nothing came from anywhere but the dashboard; no script errors.
    assert result["foreign_requests"] == []
    assert result["errors"] == [], result["errors"]

    for name in ("devices", "device", "device-24h", "alerts", "overview"):
        png = ARTIFACTS / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        target = ROOT / "docs/img/dashboard.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "device.png", target)


def test_ui_files_are_served_and_unknown_ones_are_404(server):
    for path, kind in (("/ui", "text/html"), ("/ui/app.js", "text/javascript"),
                       ("/ui/app.css", "text/css"), ("/ui/uPlot.iife.min.js", "text/javascript"),
                       ("/ui/config.json", "application/json")):
        r = server.get(path)
        assert r.status == 200, (path, r.status)
        assert r.headers["Content-Type"].startswith(kind), (path, r.headers["Content-Type"])
    assert server.get("/ui/config.json").json() == {"stale_after_s": 300}
    missing = server.get("/ui/missing.js")
    assert missing.status == 404 and missing.json()["error"] == "not_found"
    etag = server.get("/ui/app.js").headers["ETag"]
    assert request("GET", server.dash("/ui/app.js"), headers={"If-None-Match": etag}).status == 304


def test_with_dashboard_auth_the_ui_asks_for_a_read_token_then_shows_devices_and_live_readings(
        tmp_path):
    """DASHBOARD_AUTH=token (docs/security.md): the page asks for a read token, keeps it in the
    tab, and sends it as a header on every API request and on the stream (never in a URL)."""
    tokens_file = tmp_path / "tokens"
    made = subprocess.run([IOTD, "token", "create", "--read", "--tokens-file", str(tokens_file)],
                          capture_output=True, text=True, timeout=20)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    iotd = Iotd(tmp_path / "data", env={"STORE": "sqlite", "DASHBOARD_AUTH": "token",
                                        "TOKENS_FILE": str(tokens_file)}).start()
    try:
        batch = readings(datetime.datetime.now(datetime.timezone.utc))
        assert iotd.post(batch, path="/ingest/batch").status == 202
        auth = {"Authorization": f"Bearer {token}"}
        assert eventually(lambda: iotd.get(f"/devices/{DEVICE}", headers=auth).status == 200)
        assert iotd.get("/devices").status == 401
        install_playwright()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, IOTD_DASHBOARD_URL=iotd.dash(), IOTD_INGEST_URL=iotd.ingest(),
                   UI_DEVICE=DEVICE, UI_READ_TOKEN=token, UI_ARTIFACTS_DIR=str(ARTIFACTS),
                   CHROMIUM=CHROMIUM)
        proc = subprocess.run(["node", str(UI_DIR / "ui_auth_check.mjs")], cwd=UI_DIR, env=env,
                              capture_output=True, text=True, timeout=120)
        lines = proc.stdout.strip().splitlines()
        assert lines, f"ui_auth_check.mjs printed nothing (exit {proc.returncode}):\n{proc.stderr}"
        result = json.loads(lines[-1])
        assert proc.returncode == 0 and "failed" not in result, \
            f"{json.dumps(result, indent=2)}\n{proc.stderr}\n{iotd.tail()}"
        checks = result["checks"]
        assert checks["asked_for_token"] and checks["device_listed"] and checks["prompt_gone"]
        assert checks["token_in_session_storage"] and checks["stream_with_token"]
        assert checks["live_points"]["after"] == [n + 1 for n in checks["live_points"]["before"]]
        assert result["token_in_urls"] == [] and result["errors"] == [], result
    finally:
        iotd.stop()
