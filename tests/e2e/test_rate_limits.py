"""Rate limits of the ingestion API against the real binary: a runaway device or client gets 429
with Retry-After while the others' readings still get 202, and nothing refused is stored."""
import threading

import pytest

from conftest import Iotd, all_telemetry, eventually, request


def stored(server, device):
    """How many readings of `device` are stored (0 before the first one is)."""
    if server.get(f"/devices/{device}/telemetry?limit=1").status == 404:
        return 0
    return len(all_telemetry(server, device))


def reading(device, i=0):
    return {"device_id": device, "temperature_c": 20 + i % 10, "humidity": 40}


@pytest.fixture
def limited(tmp_path):
    server = Iotd(tmp_path / "data", env={"STORE": "sqlite", "RATE_LIMIT_DEVICE": "5",
                                          "RATE_LIMIT_DEVICE_BURST": "10"}).start()
    yield server
    server.stop()


def test_a_flooding_device_gets_429_while_another_device_gets_202(limited):
    statuses = {"runaway": [], "calm": []}
    retry_after = []

    def flood():
        for i in range(200):
            r = limited.post(reading("runaway", i))
            statuses["runaway"].append(r.status)
            if r.status == 429:
                retry_after.append(r.headers.get("Retry-After"))
                assert r.json()["error"] == "rate_limited"

    t = threading.Thread(target=flood)
    t.start()
    for i in range(5):  # within the calm device's limit, during the flood
        statuses["calm"].append(limited.post(reading("calm", i)).status)
    t.join()

    assert statuses["calm"] == [202] * 5
    accepted = statuses["runaway"].count(202)
    assert statuses["runaway"].count(429) > 0
    assert set(statuses["runaway"]) <= {202, 429}
    assert accepted >= 10  # the burst at least
    assert retry_after and all(v is not None and int(v) >= 1 for v in retry_after)
    # Exactly what was acknowledged is stored: nothing of the 429s.
    assert eventually(lambda: stored(limited, "runaway") == accepted)
    assert eventually(lambda: stored(limited, "calm") == 5)
    text = request("GET", limited.ingest("/metrics")).body.decode()
    assert 'ingest_readings_rejected_total{reason="rate_limited"}' in text


def test_a_batch_keeps_the_readings_within_the_limit_and_lists_the_others(limited):
    body = [reading("gw-runaway", i) for i in range(15)] + [reading("gw-calm")]
    r = limited.post(body, path="/ingest/batch")
    assert r.status == 202, r.body
    doc = r.json()
    assert doc["accepted"] == 11  # 10 (the burst) of the runaway device + the calm one
    assert doc["rejected"] == 5
    assert {e["error"] for e in doc["errors"]} == {"rate_limited"}
    assert [e["index"] for e in doc["errors"]] == [10, 11, 12, 13, 14]
    # Only the runaway device, with nothing left: 429 and Retry-After, nothing stored.
    r = limited.post([reading("gw-runaway", 99)], path="/ingest/batch")
    assert r.status == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert eventually(lambda: stored(limited, "gw-runaway") == 10)
    assert eventually(lambda: stored(limited, "gw-calm") == 1)


def test_the_client_limit_follows_forwarded_for_only_from_a_trusted_proxy(tmp_path):
    server = Iotd(tmp_path / "data", env={"STORE": "sqlite", "RATE_LIMIT_CLIENT": "1",
                                          "RATE_LIMIT_CLIENT_BURST": "3",
                                          "TRUSTED_PROXIES": "127.0.0.1"}).start()
    try:
        def send(client, i):
            return server.post(reading(f"dev-{client}-{i}"),
                               headers={"X-Forwarded-For": client}).status

        noisy = [send("203.0.113.7", i) for i in range(10)]
        assert noisy[:3] == [202] * 3 and noisy.count(429) >= 6
        # Another client behind the same proxy is not held up by the noisy one.
        assert [send("203.0.113.8", i) for i in range(3)] == [202] * 3
        # Probes and metrics are never limited.
        for _ in range(10):
            assert server.get("/health").status == 200
        r = server.post(reading("x"), headers={"X-Forwarded-For": "203.0.113.7"})
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"] == "rate_limited"
        text = request("GET", server.ingest("/metrics")).body.decode()
        assert "ingest_requests_rate_limited_total" in text
    finally:
        server.stop()


def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path):
    server = Iotd(tmp_path / "data", env={"STORE": "sqlite", "RATE_LIMIT_CLIENT": "1",
                                          "RATE_LIMIT_CLIENT_BURST": "2"}).start()
    try:
        # Each request claims another address; all come from 127.0.0.1 and share its bucket.
        statuses = [server.post(reading(f"d{i}"), headers={"X-Forwarded-For": f"198.51.100.{i}"})
                    .status for i in range(6)]
        assert statuses[:2] == [202, 202]
        assert statuses.count(429) >= 3
    finally:
        server.stop()
