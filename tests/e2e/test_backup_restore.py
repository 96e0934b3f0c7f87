"""Backup and restore of the embedded deployment (docs/deployment.md): a copy of DATA_DIR taken
while iotd is stopped restores exactly, and a store restored without its bus.db (or a deleted
bus.db) does not make iotd skip the readings that arrive next."""
import shutil

from conftest import Iotd, all_telemetry, eventually


def reading(device, i):
    return {"device_id": device, "temperature_c": 20 + i % 5, "humidity": 50.0,
            "ts": f"2026-11-28T10:{i // 60 % 60:02d}:{i % 60:02d}Z"}


def post_all(server, device, indexes):
    for i in indexes:
        assert server.post(reading(device, i)).status == 202


def total(server):
    return server.get("/stats").json()["total_telemetry"]


def test_a_store_without_its_bus_skips_nothing(data_dir):
    """bus.db deleted (or restored older than store.db): the bus continues from the workers'
    positions, so every reading sent afterwards is stored and counted."""
    server = Iotd(data_dir).start()
    post_all(server, "d1", range(30))
    assert eventually(lambda: total(server) == 30)
    assert server.stop() == 0
    for f in data_dir.glob("bus.db*"):
        f.unlink()

    server = Iotd(data_dir).start()
    try:
        post_all(server, "d2", range(10))
        assert eventually(lambda: total(server) == 40), server.tail()
        assert len(all_telemetry(server, "d2")) == 10
        assert server.get("/devices").status == 200
        assert "new readings start at offset 30" in server.tail(200)
    finally:
        server.stop()


def test_a_copy_taken_while_stopped_restores_exactly(tmp_path):
    data = tmp_path / "data"
    server = Iotd(data, env={"STORE": "sqlite"}).start()
    post_all(server, "d1", range(20))
    assert eventually(lambda: total(server) == 20)
    assert server.stop() == 0
    backup = tmp_path / "backup"
    shutil.copytree(data, backup)

    server = Iotd(data, env={"STORE": "sqlite"}).start()
    post_all(server, "d1", range(20, 35))
    assert eventually(lambda: total(server) == 35)
    assert server.stop() == 0

    shutil.rmtree(data)
    shutil.copytree(backup, data)
    server = Iotd(data, env={"STORE": "sqlite"}).start()
    try:
        assert total(server) == 20
        aggs = server.get("/devices/d1/aggregates?window=1h&sensor_type=temperature_c").json()
        assert sum(a["count"] for a in aggs) == 20
        post_all(server, "d1", range(35, 40))
        assert eventually(lambda: total(server) == 25)
    finally:
        server.stop()
