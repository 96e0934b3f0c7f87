"""Access control against the real binary (docs/security.md): device, gateway and read tokens.

`iotd all` runs with INGEST_AUTH=token and DASHBOARD_AUTH=token and a TOKENS_FILE that
`iotd token create` filled before the start. Each table row is a request with the status and the
JSON error code it must get; every rejected write carries a marker (the numeric field `case`, a
sensor of its own) and the test checks through the dashboard, with a good read token, that no
reading of a rejected case was stored. Revocation and new tokens happen with `iotd token` while
iotd runs and take effect within seconds, without a restart. Every test runs on both stores.
"""
import subprocess

import pytest

from conftest import IOTD, Iotd, eventually, request
from sse import SseClient


def token_cli(tokens_file, *args):
    """Runs `iotd token ...`; returns its stdout (the token, for create)."""
    proc = subprocess.run([IOTD, "token", *args, "--tokens-file", str(tokens_file)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def token_id(token):
    return token.split("_")[1]


def bearer(token):
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def reading(device, case, **extra):
    return {"device_id": device, "temperature_c": 21.5, "humidity": 40, "case": case, **extra}


@pytest.fixture
def secured(data_dir, tmp_path):
    """iotd with both APIs behind tokens, and one token of each kind (by name)."""
    tokens_file = tmp_path / "tokens"
    tokens = {
        "dev1": token_cli(tokens_file, "create", "--device", "dev-1", "--name", "device 1"),
        "gateway": token_cli(tokens_file, "create", "--gateway", "gw-1,gw-2"),
        "read": token_cli(tokens_file, "create", "--read", "--name", "operators"),
        "read_site_a": token_cli(tokens_file, "create", "--read", "--prefix", "site-a-"),
        "writer_sites": token_cli(tokens_file, "create", "--gateway",
                                  "site-a-1,site-a-2,site-b-1"),
    }
    server = Iotd(data_dir, env={"INGEST_AUTH": "token", "DASHBOARD_AUTH": "token",
                                 "TOKENS_FILE": str(tokens_file)}).start()
    server.tokens = tokens
    server.tokens_file = tokens_file
    yield server
    server.stop()


def stored_cases(server):
    """The `case` markers of every stored reading (read with the unscoped read token)."""
    r = server.get("/telemetry?limit=1000", headers=bearer(server.tokens["read"]))
    assert r.status == 200, r.body
    return {row["case"] for row in r.json() if "case" in row}


def test_ingest_answers_each_kind_of_token_with_its_status_and_writes_only_what_it_accepts(
        secured):
    t = secured.tokens
    unknown = "iotd_0123456789ab_" + "A" * 43
    one, batch = "/ingest", "/ingest/batch"
    # (case, path, token or raw Authorization header, body, status, error code)
    cases = [
        (1, one, None, reading("dev-1", 1), 401, "unauthorized"),
        (2, one, "", reading("dev-1", 2), 401, "invalid_token"),
        (3, one, unknown, reading("dev-1", 3), 401, "invalid_token"),
        (4, one, "not-a-token", reading("dev-1", 4), 401, "invalid_token"),
        (5, one, {"Authorization": "Basic ZGV2LTE6cGFzcw=="}, reading("dev-1", 5), 401,
         "invalid_token"),
        (6, one, t["dev1"], reading("dev-1", 6), 202, None),
        (7, one, t["dev1"], reading("dev-2", 7), 403, "forbidden"),
        (8, one, t["gateway"], reading("gw-2", 8), 202, None),
        (9, one, t["gateway"], reading("gw-3", 9), 403, "forbidden"),
        (10, batch, t["gateway"], [reading("gw-1", 10), reading("gw-2", 10)], 202, None),
        # One reading outside the gateway's set refuses the whole batch.
        (11, batch, t["gateway"], [reading("gw-1", 11), reading("dev-1", 11)], 403, "forbidden"),
        (12, one, t["read"], reading("dev-1", 12), 403, "forbidden"),
        (13, batch, t["read"], [reading("dev-1", 13)], 403, "forbidden"),
        (14, batch, None, [reading("gw-1", 14)], 401, "unauthorized"),
        # A malformed body with no token is 401: the token is checked before the body is read.
        (15, one, None, "{not json", 401, "unauthorized"),
    ]
    for case, path, token, body, status, code in cases:
        headers = token if isinstance(token, dict) else bearer(token)
        r = secured.post(body, path=path, headers=headers)
        assert r.status == status, (case, r.status, r.body)
        if status == 202:
            continue
        err = r.json()
        assert err["error"] == code and err["message"], (case, err)
        if status == 401:
            assert r.headers["WWW-Authenticate"].startswith("Bearer realm="), case
        if case in (7, 9, 11):
            assert err["field"] == "device_id", err
        # Nothing of the request leaks back.
        assert unknown not in r.body.decode() and t["dev1"] not in r.body.decode()

    accepted = {case for case, _, _, _, status, _ in cases if status == 202}
    assert eventually(lambda: stored_cases(secured) == accepted), stored_cases(secured)
    metrics = request("GET", secured.ingest("/metrics")).body.decode()
    assert 'auth_requests_denied_total{role="ingest",reason="missing"} 3' in metrics
    assert 'auth_requests_denied_total{role="ingest",reason="device_not_allowed"} 3' in metrics
    assert 'auth_requests_denied_total{role="ingest",reason="wrong_kind"} 2' in metrics


def test_a_revoked_token_stops_working_and_a_new_one_starts_working_without_a_restart(secured):
    tokens_file = secured.tokens_file
    token = secured.tokens["dev1"]
    assert secured.post(reading("dev-1", 1), headers=bearer(token)).status == 202
    assert token_cli(tokens_file, "revoke", token_id(token)) == f"revoked {token_id(token)}"

    def refused():
        r = secured.post(reading("dev-1", 2), headers=bearer(token))
        return r if r.status != 202 else None
    r = eventually(refused, timeout=10)
    assert r and r.status == 401 and r.json()["error"] == "invalid_token", r and r.body
    assert "revoked" in r.json()["message"]
    assert secured.post(reading("dev-1", 99), headers=bearer(token)).status == 401

    fresh = token_cli(tokens_file, "create", "--device", "dev-1")
    assert eventually(lambda: secured.post(reading("dev-1", 3), headers=bearer(fresh)).status
                      == 202, timeout=10)
    # Revoking a read token closes the dashboard to it too.
    read = secured.tokens["read_site_a"]
    assert secured.get("/devices", headers=bearer(read)).status == 200
    token_cli(tokens_file, "revoke", token_id(read))
    assert eventually(lambda: secured.get("/devices", headers=bearer(read)).status == 401,
                      timeout=10)
    # Case 2 may have been stored by attempts before the revocation was picked up; 99 never.
    assert eventually(lambda: stored_cases(secured) >= {1, 3})
    assert 99 not in stored_cases(secured)


def test_the_dashboard_needs_a_read_token_and_a_scoped_one_sees_only_its_devices(secured):
    t = secured.tokens
    writer = bearer(t["writer_sites"])
    for device in ("site-a-1", "site-a-2", "site-b-1"):
        assert secured.post(reading(device, 1), headers=writer).status == 202
        # Out of range: one alert per device.
        assert secured.post(reading(device, 2, temperature_c=90), headers=writer).status == 202
    read, scoped = bearer(t["read"]), bearer(t["read_site_a"])
    assert eventually(lambda: len(secured.get("/alerts", headers=read).json()) == 3)
    assert eventually(lambda: len(secured.get("/telemetry", headers=read).json()) == 6)
    assert eventually(lambda: len(secured.get("/devices", headers=read).json()) == 3)
    assert eventually(lambda: len(secured.get("/aggregated?limit=1000", headers=read).json()) >= 6)
    alert_of = {a["device_id"]: a["id"] for a in secured.get("/alerts", headers=read).json()}

    # (path, token headers, status, error code)
    cases = [
        ("/devices", {}, 401, "unauthorized"),
        ("/telemetry", bearer("iotd_0123456789ab_" + "B" * 43), 401, "invalid_token"),
        ("/devices", bearer(t["dev1"]), 403, "forbidden"),
        ("/stats", bearer(t["gateway"]), 403, "forbidden"),
        ("/devices", read, 200, None),
        ("/stats", read, 200, None),
        ("/dlq", read, 200, None),
        ("/devices/site-b-1/telemetry", read, 200, None),
        ("/devices/site-a-1", scoped, 200, None),
        ("/devices/site-a-1/telemetry", scoped, 200, None),
        ("/devices/site-a-2/aggregates", scoped, 200, None),
        ("/devices/site-b-1", scoped, 403, "forbidden"),
        ("/devices/site-b-1/telemetry", scoped, 403, "forbidden"),
        ("/devices/site-b-1/aggregates", scoped, 403, "forbidden"),
        ("/alerts?device_id=site-b-1", scoped, 403, "forbidden"),
        ("/stats", scoped, 403, "forbidden"),
        ("/dlq", scoped, 403, "forbidden"),
        (f"/alerts/{alert_of['site-a-1']}", scoped, 200, None),
        # Another scope's alert does not exist for this token.
        (f"/alerts/{alert_of['site-b-1']}", scoped, 404, "alert_not_found"),
        # Open without a token: probes, metrics, the UI's files and the API document.
        ("/health", {}, 200, None),
        ("/ready", {}, 200, None),
        ("/metrics", {}, 200, None),
        ("/ui", {}, 200, None),
        ("/openapi.json", {}, 200, None),
    ]
    for path, headers, status, code in cases:
        r = secured.get(path, headers=headers)
        assert r.status == status, (path, headers, r.status, r.body)
        if code:
            assert r.json()["error"] == code, (path, r.body)
        if status == 401:
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), path

    # Lists hold only the scope's devices, filtered in the store: pages stay full.
    def devices_of(path, headers):
        r = secured.get(path, headers=headers)
        assert r.status == 200, (path, r.body)
        return sorted({row["device_id"] for row in r.json()})
    in_scope = ["site-a-1", "site-a-2"]
    for path in ("/devices", "/telemetry", "/aggregated?limit=1000", "/alerts",
                 "/alerts/recent"):
        assert devices_of(path, scoped) == in_scope, path
        assert "site-b-1" in devices_of(path, read), path
    page = secured.get("/telemetry?limit=2", headers=scoped)
    assert len(page.json()) == 2 and page.headers["X-Next-Cursor"]
    link = page.headers["Link"]
    rest = secured.get(link[1:link.index(">")], headers=scoped).json()
    assert {r["device_id"] for r in page.json() + rest} == set(in_scope)
    assert len(page.json() + rest) == 4
    assert secured.get("/devices?limit=1", headers=scoped).json()[0]["device_id"] == "site-a-1"
    # A prefix parameter narrower than the scope narrows it; one outside it finds nothing.
    assert devices_of("/devices?prefix=site-a-2", scoped) == ["site-a-2"]
    assert devices_of("/devices?prefix=site-b", scoped) == []

    # Acknowledging: in scope works, another scope's alert is 404 and stays unacknowledged.
    ack = {"by": "ops"}
    r = request("POST", secured.dash(f"/alerts/{alert_of['site-a-1']}/ack"), ack, headers=scoped)
    assert r.status == 200 and r.json()["acknowledged"] is True, r.body
    r = request("POST", secured.dash(f"/alerts/{alert_of['site-b-1']}/ack"), ack, headers=scoped)
    assert r.status == 404 and r.json()["error"] == "alert_not_found", r.body
    r = request("POST", secured.dash(f"/alerts/{alert_of['site-b-1']}/ack"), ack)
    assert r.status == 401, r.body
    assert secured.get(f"/alerts/{alert_of['site-b-1']}", headers=read).json()["acknowledged"] \
        is False

    metrics = secured.get("/metrics").body.decode()
    assert 'auth_requests_denied_total{role="dashboard",reason="out_of_scope"}' in metrics


def test_the_live_stream_needs_a_read_token_and_streams_only_its_scope(secured):
    t = secured.tokens
    no_token = SseClient(secured.dashboard_port)
    device_token = SseClient(secured.dashboard_port, headers=bearer(t["dev1"]))
    outside = SseClient(secured.dashboard_port, query="?device_id=site-b-1",
                        headers=bearer(t["read_site_a"]))
    scoped = SseClient(secured.dashboard_port, headers=bearer(t["read_site_a"]))
    full = SseClient(secured.dashboard_port, headers=bearer(t["read"]))
    try:
        assert eventually(lambda: no_token.head and device_token.head and outside.head
                          and scoped.head and full.head)
        assert no_token.head.startswith("HTTP/1.1 401"), no_token.head
        assert device_token.head.startswith("HTTP/1.1 403"), device_token.head
        assert outside.head.startswith("HTTP/1.1 403"), outside.head
        assert scoped.head.startswith("HTTP/1.1 200") and full.head.startswith("HTTP/1.1 200")
        writer = bearer(t["writer_sites"])

        # Until both streams see a reading sent after they connected (the tail starts at the end).
        def streamed():
            for device in ("site-b-1", "site-a-1"):
                assert secured.post(reading(device, 1), headers=writer).status == 202
            return scoped.of("reading") and {d["device_id"] for _, d in full.of("reading")} >= {
                "site-a-1", "site-b-1"}
        assert eventually(streamed, timeout=15)
        assert {d["device_id"] for _, d in scoped.of("reading")} == {"site-a-1"}
        # Alerts too: only the scope's.
        for device in ("site-b-1", "site-a-2"):
            assert secured.post(reading(device, 2, temperature_c=95), headers=writer).status == 202
        assert eventually(lambda: {d["device_id"] for _, d in full.of("alert")} >= {
            "site-a-2", "site-b-1"}, timeout=15)
        assert eventually(lambda: scoped.of("alert"))
        assert {d["device_id"] for _, d in scoped.of("alert")} == {"site-a-2"}
    finally:
        for client in (no_token, device_token, outside, scoped, full):
            client.close()


def test_with_no_tokens_file_everything_is_refused_until_a_token_is_created(data_dir, tmp_path):
    tokens_file = tmp_path / "none-yet"
    server = Iotd(data_dir, env={"INGEST_AUTH": "token", "DASHBOARD_AUTH": "token",
                                 "TOKENS_FILE": str(tokens_file)}).start()
    try:
        guess = "iotd_0123456789ab_" + "C" * 43
        r = server.post(reading("dev-1", 1), headers=bearer(guess))
        assert r.status == 401 and r.json()["error"] == "invalid_token", r.body
        assert server.get("/devices", headers=bearer(guess)).status == 401
        # The probes stay open so that an orchestrator keeps the process.
        assert server.get("/ready").status == 200
        token = token_cli(tokens_file, "create", "--gateway", "dev-1")
        read = token_cli(tokens_file, "create", "--read")
        assert eventually(lambda: server.post(reading("dev-1", 2), headers=bearer(token)).status
                          == 202, timeout=10)
        assert eventually(lambda: [r["case"] for r in server.get(
            "/telemetry", headers=bearer(read)).json()] == [2], timeout=10)
    finally:
        server.stop()


def test_auth_is_off_by_default_and_a_broken_tokens_file_refuses_the_start(iotd, tmp_path):
    # The quick start: no token needed anywhere.
    assert iotd.post(reading("dev-1", 1)).status == 202
    assert iotd.get("/devices").status == 200
    broken = tmp_path / "tokens"
    broken.write_text("this is not a tokens file\n")
    proc = subprocess.run([IOTD, "all", "--data-dir", str(tmp_path / "data2"),
                           "--ingest-port", "0", "--dashboard-port", "0",
                           "--bind-address", "127.0.0.1", "--ingest-auth", "token",
                           "--tokens-file", str(broken)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
