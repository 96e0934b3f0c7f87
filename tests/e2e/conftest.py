"""End-to-end fixtures: start the real `iotd` binary on free ports with a temporary DATA_DIR.

Nothing here waits on luck: a start waits for /ready, a shutdown for the process to exit, and
"eventually" checks poll the API with a bounded deadline.
"""
import json
import os
import pathlib
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
IOTD = os.environ.get("IOTD", str(ROOT / "build/release/src/app/iotd"))


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


def request(method, url, body=None, content_type="application/json", headers=None, timeout=10):
    data = body
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    h = dict(headers or {})
    if data is not None and content_type is not None:
        h["Content-Type"] = content_type
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers, e.read())


def eventually(fn, timeout=15.0, interval=0.05):
    """Calls fn until it returns a truthy value or the deadline passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Iotd:
    """One `iotd all` process. Ports are chosen by the OS (port 0) and read from its log."""

    def __init__(self, data_dir, env=None, args=None):
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.args = args or []
        self.proc = None
        self.ingest_port = None
        self.dashboard_port = None
        self.log_path = pathlib.Path(data_dir).parent / "iotd.log"

    def start(self, ingest_port=0, dashboard_port=0):
        env = dict(os.environ)
        env.update({
            "DATA_DIR": str(self.data_dir),
            "INGEST_PORT": str(ingest_port),
            "DASHBOARD_PORT": str(dashboard_port),
            "BIND_ADDRESS": "127.0.0.1",
            "LOG_LEVEL": "info",
        })
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.log_offset = self.log.tell()  # earlier runs' lines are not this run's
        self.proc = subprocess.Popen([IOTD, "all", *self.args], env=env, stdout=self.log,
                                     stderr=self.log)
        self._read_ports()
        assert eventually(lambda: self._ready(), timeout=20), self.tail()
        return self

    def _read_ports(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ports = {}
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                lines = f.read().decode(errors="replace").splitlines()
            for line in lines:
                try:
                    msg = json.loads(line)["msg"]
                except (ValueError, KeyError):
                    continue
                for name in ("ingest", "dashboard"):
                    prefix = f"{name} listening on port "
                    if msg.startswith(prefix):
                        ports[name] = int(msg[len(prefix):])
            if self.proc.poll() is not None:
                raise AssertionError("iotd exited at start-up:\n" + self.tail())
            if len(ports) == 2:
                self.ingest_port, self.dashboard_port = ports["ingest"], ports["dashboard"]
                return
            time.sleep(0.02)
        raise AssertionError("iotd did not log its ports:\n" + self.tail())

    def _ready(self):
        try:
            return request("GET", self.dash("/ready"), timeout=2).status == 200
        except OSError:
            return False

    def ingest(self, path=""):
        return f"http://127.0.0.1:{self.ingest_port}{path}"

    def dash(self, path=""):
        return f"http://127.0.0.1:{self.dashboard_port}{path}"

    def post(self, body, path="/ingest", **kw):
        return request("POST", self.ingest(path), body, **kw)

    def get(self, path, **kw):
        return request("GET", self.dash(path), **kw)

    def tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        return code

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def iotd(data_dir):
    server = Iotd(data_dir).start()
    yield server
    server.stop()
