"""End-to-end fixtures: start the real `iotd` binary on free ports with a temporary DATA_DIR.

Every test that uses the `iotd` or `data_dir` fixture runs twice, once per store: `[sqlite]`
(the default) and `[mongodb]` (STORE=mongodb against one FerretDB server shared by the session,
each test in a MONGO_DB of its own). An `Iotd` built on the same data_dir, as restarts do, keeps
the same store and database.

Nothing here waits on luck: a start waits for /ready, a shutdown for the process to exit, and
"eventually" checks poll the API with a bounded deadline.
"""
import itertools
import json
import os
import pathlib
import re
import selectors
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
IOTD = os.environ.get("IOTD", str(ROOT / "build/release/src/app/iotd"))
STORES = ["sqlite", "mongodb"]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


def request(method, url, body=None, content_type="application/json", headers=None, timeout=10,
            context=None):
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
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
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


def ferretdb_binary():
    """The FerretDB binary: $FERRETDB, else where scripts/ferretdb.sh builds it. A missing one
    fails the test (never skips it), saying how to build it."""
    path = os.environ.get("FERRETDB") or subprocess.run(
        [str(ROOT / "scripts/ferretdb.sh"), "path"], capture_output=True, text=True,
        check=True).stdout.strip()
    if not os.access(path, os.X_OK):
        pytest.fail(f"FerretDB binary not found at {path!r}: run `scripts/ferretdb.sh build` "
                    "(needs Go and the Go module proxy) or set FERRETDB", pytrace=False)
    return path


class FerretDb:
    """One FerretDB server (MongoDB wire protocol, SQLite backend) on 127.0.0.1, its data in
    `root/data/`. start() picks a free port the first time; restart() keeps port and data."""

    READY = re.compile(rb"ferretdb listening on (mongodb://127\.0\.0\.1:(\d+)/)")

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.data = self.root / "data"
        self.log_path = self.root / "ferretdb.log"
        self.proc = None
        self.url = None
        self.port = 0

    def start(self, timeout=10):
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [ferretdb_binary(), "--listen-addr", f"127.0.0.1:{self.port}",
                 "--sqlite-url", f"file:{self.data}/"], stdout=subprocess.PIPE, stderr=log)
        line = self._read_line(timeout)
        m = self.READY.match(line)
        if not m:
            self.stop()
            raise AssertionError(f"FerretDB did not start within {timeout} s (printed {line!r}):"
                                 f"\n{self.tail()}")
        self.url, self.port = m.group(1).decode(), int(m.group(2))
        return self

    def _read_line(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(fd, 1)
                if not chunk:
                    break
                line += chunk
        return line

    def stop(self, timeout=10):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def restart(self):
        self.stop()
        return self.start()

    def tail(self, n=20):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# The store settings of each data_dir handed out by the `data_dir` fixture, so that every Iotd
# started on it (a restart too) uses the same store and database.
_STORE_ENV = {}
_db_counter = itertools.count(1)


def store_env(data_dir):
    """The environment that selects the store of the test that owns data_dir."""
    return dict(_STORE_ENV.get(str(data_dir), {}))


def unique_db_name(test_name):
    """A MongoDB database name used by no other test of the session (at most 63 characters)."""
    name = f"e2e_{next(_db_counter)}_" + re.sub(r"[^A-Za-z0-9_]", "_", test_name)
    return name[:63]


def all_telemetry(server, device):
    """Every stored reading of `device`, newest first, following the dashboard's Link pages."""
    rows, path = [], f"/devices/{device}/telemetry?limit=1000"
    while path:
        r = server.get(path)
        assert r.status == 200, r.body
        rows += r.json()
        link = r.headers.get("Link")
        path = link[1:link.index(">")] if link else None
    return rows


class Iotd:
    """One `iotd all` process. Ports are chosen by the OS (port 0) and read from its log."""

    def __init__(self, data_dir, env=None, args=None, tls=None):
        """`tls`: an ssl.SSLContext that trusts the listeners' certificate, when env sets
        TLS_CERT_FILE; the client then speaks https and checks the certificate."""
        self.data_dir = data_dir
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.extra_env = {**store_env(data_dir), **(env or {})}
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
            return request("GET", self.dash("/ready"), timeout=2, context=self.tls).status == 200
        except OSError:
            return False

    def ingest(self, path=""):
        return f"{self.scheme}://127.0.0.1:{self.ingest_port}{path}"

    def dash(self, path=""):
        return f"{self.scheme}://127.0.0.1:{self.dashboard_port}{path}"

    def post(self, body, path="/ingest", **kw):
        return request("POST", self.ingest(path), body, context=self.tls, **kw)

    def get(self, path, **kw):
        return request("GET", self.dash(path), context=self.tls, **kw)

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


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory):
    """The FerretDB server shared by every [mongodb] test of the session."""
    server = FerretDb(tmp_path_factory.mktemp("ferretdb")).start()
    yield server
    server.stop()


@pytest.fixture
def own_ferretdb(tmp_path):
    """A FerretDB server of the test's own, for tests that stop and restart it."""
    server = FerretDb(tmp_path / "ferretdb").start()
    yield server
    server.stop()


@pytest.fixture(params=STORES)
def store(request):
    """The store settings of the test: {} plus STORE=sqlite, or STORE=mongodb with the shared
    FerretDB's URL and a database of the test's own. FerretDB starts only if a test needs it."""
    if request.param == "sqlite":
        return {"STORE": "sqlite"}
    server = request.getfixturevalue("ferretdb")
    return {"STORE": "mongodb", "MONGO_URL": server.url,
            "MONGO_DB": unique_db_name(request.node.name)}


@pytest.fixture
def data_dir(tmp_path, store):
    path = tmp_path / "data"
    _STORE_ENV[str(path)] = store
    yield path
    _STORE_ENV.pop(str(path), None)


@pytest.fixture
def iotd(data_dir):
    server = Iotd(data_dir).start()
    yield server
    server.stop()


# --- Kafka (BUS=kafka) ---------------------------------------------------------------------------
# The broker harness lives in kafka_broker.py; see there for how it starts and what it waits for.
from kafka_broker import KafkaBroker  # noqa: E402  (appended section, kept apart from the above)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    """The Kafka broker shared by the session: use topics of the test's own, never stop it."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    yield broker
    broker.kill()  # its data goes with the session's temporary directory


@pytest.fixture
def own_kafka(tmp_path):
    """A Kafka broker of the test's own, for tests that stop, kill and restart it."""
    broker = KafkaBroker(tmp_path / "kafka").start()
    yield broker
    broker.kill()
