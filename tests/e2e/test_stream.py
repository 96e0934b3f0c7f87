"""GET /stream: the dashboard's Server-Sent Events of new readings and alert changes.

Against the real binary (`iotd all`, SQLite): a listener sees a reading within a second of its
202, a device filter keeps other devices' readings out, an alert arrives when a hot reading opens
it and again when it is acknowledged; and a client that stops reading is cut off after a bounded
amount, while another client keeps receiving everything and the server keeps answering.
"""
import json
import re
import time

import pytest

from conftest import Iotd, eventually, request
from sse import SseClient


def metric(iotd, name):
    text = request("GET", iotd.dash("/metrics")).body.decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


@pytest.fixture
def server(tmp_path):
    iotd = Iotd(tmp_path / "data", env={"STORE": "sqlite", "STREAM_CLIENT_BUFFER": "1048576"}).start()
    yield iotd
    iotd.stop()


def test_a_reading_reaches_a_listener_within_a_second_of_its_acknowledgement(server):
    everything = SseClient(server.dashboard_port)
    only_b = SseClient(server.dashboard_port, "?device_id=stream-b")
    try:
        assert eventually(lambda: metric(server, "dashboard_stream_clients") == 2)
        assert "200 OK" in everything.head and "text/event-stream" in everything.head
        delays = []
        for i in range(5):
            device = "stream-a" if i % 2 == 0 else "stream-b"
            r = server.post({"device_id": device, "temperature_c": 20 + i, "humidity": 50})
            acked = time.monotonic()
            assert r.status == 202, r.body
            got = lambda: everything.of("reading", lambda d: d["device_id"] == device and
                                        d["temperature_c"] == 20 + i)
            assert eventually(got, timeout=5), "no reading event"
            delays.append(got()[0][0] - acked)
        assert max(delays) < 1.0, delays
        # The event carries the reading as the telemetry list shows it.
        _, first = everything.of("reading")[0]
        stored = lambda: first in (server.get("/devices/stream-a/telemetry?limit=1000").json()
                                   if server.get("/devices/stream-a").status == 200 else [])
        assert eventually(stored), first
        # The filtered stream saw only stream-b's readings: 2 of the 5.
        assert eventually(lambda: len(only_b.of("reading")) == 2)
        assert {d["device_id"] for _, d in only_b.of("reading")} == {"stream-b"}
    finally:
        everything.close()
        only_b.close()


def test_alert_changes_arrive_live_open_then_acknowledged(server):
    listener = SseClient(server.dashboard_port)
    try:
        assert eventually(lambda: metric(server, "dashboard_stream_clients") == 1)
        assert server.post({"device_id": "hot", "temperature_c": 80, "humidity": 50}).status == 202
        opened = lambda: listener.of("alert", lambda d: d["device_id"] == "hot")
        assert eventually(opened, timeout=5)
        alert = opened()[0][1]
        assert alert["status"] == "active" and alert["acknowledged"] is False
        r = request("POST", server.dash(f"/alerts/{alert['id']}/ack"), {"by": "tester"})
        assert r.status == 200, r.body
        acked = lambda: listener.of("alert", lambda d: d["id"] == alert["id"] and d["acknowledged"])
        assert eventually(acked, timeout=5)
        assert acked()[0][1]["acknowledged_by"] == "tester"
    finally:
        listener.close()


def test_a_client_that_stops_reading_is_cut_off_and_nobody_else_notices(server):
    stalled = SseClient(server.dashboard_port, rcvbuf=4096, read=False)
    reader = SseClient(server.dashboard_port)
    try:
        assert eventually(lambda: metric(server, "dashboard_stream_clients") == 2)
        # ~19 MB of events: far more than the stalled client's bound (1 MiB queued in iotd) plus
        # what the kernel buffers on both ends of a loopback connection (a few MB).
        sent = 0
        for batch in range(150):
            body = "\n".join(json.dumps({"device_id": f"flood-{i % 50}", "temperature_c": 21.5,
                                         "humidity": 40, "seq": batch * 1000 + i})
                             for i in range(1000))
            r = request("POST", server.ingest("/ingest/batch"), body,
                        content_type="application/x-ndjson")
            assert r.status == 202, r.body
            sent += 1000
        assert eventually(lambda: metric(server, "dashboard_stream_clients_cut_off_total") == 1,
                          timeout=30), server.tail()
        # The reader got every reading, in order per device, though the other client stalled.
        assert eventually(lambda: len(reader.of("reading")) == sent, timeout=60), \
            (len(reader.of("reading")), sent)
        seqs = [d["seq"] for _, d in reader.of("reading", lambda d: d["device_id"] == "flood-7")]
        assert seqs == sorted(seqs) and len(seqs) == sent // 50
        assert not reader.closed
        # The stalled client now reads what was left for it, then the end: a bounded amount.
        stalled.start_reading()
        stalled.thread.join(timeout=30)
        assert stalled.closed
        assert stalled.bytes < 8 << 20, stalled.bytes
        assert reader.bytes > 2 * stalled.bytes
        # The server still answers, and the reader still gets new readings.
        assert server.post({"device_id": "after", "temperature_c": 20, "humidity": 50}).status == 202
        assert eventually(lambda: reader.of("reading", lambda d: d["device_id"] == "after"))
        assert metric(server, "dashboard_stream_clients") == 1
    finally:
        stalled.close()
        reader.close()


def test_stream_limits_and_bad_parameters(tmp_path):
    iotd = Iotd(tmp_path / "data", env={"STORE": "sqlite", "STREAM_MAX_CLIENTS": "1"}).start()
    first = SseClient(iotd.dashboard_port)
    try:
        assert eventually(lambda: metric(iotd, "dashboard_stream_clients") == 1)
        r = iotd.get("/stream")
        assert r.status == 503 and r.json()["error"] == "overloaded"
        assert r.headers["Retry-After"]
        r = iotd.get("/stream?device_id=")
        assert r.status in (422, 503)
        first.close()
        assert eventually(lambda: metric(iotd, "dashboard_stream_clients") == 0)
        r = iotd.get("/stream?device_id=")
        assert r.status == 422 and r.json()["field"] == "device_id"
    finally:
        first.close()
        iotd.stop()
