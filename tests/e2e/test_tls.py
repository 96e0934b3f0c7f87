"""HTTPS on the listeners (TLS_CERT_FILE / TLS_KEY_FILE) against the real binary.

The test makes its own CA and a server certificate for 127.0.0.1/localhost with the `openssl`
command; the clients trust only that CA and check the certificate and the host name, as a
device or a browser would."""
import os
import re
import shutil
import ssl
import subprocess
import urllib.error

import pytest

from conftest import IOTD, Iotd, eventually, ferretdb_binary, request
from sse import SseClient

READING = {"device_id": "tls-dev", "temperature_c": 21.5, "humidity": 40}


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
            "-out", str(d / f"{name}.pem"))
    return d / f"{name}.pem"


def make_server_cert(d, ca, name):
    """A certificate for localhost/127.0.0.1 signed by `ca`; returns (cert, key)."""
    key, csr, cert, ext = (d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem",
                           d / f"{name}.ext")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca.with_suffix(".key")),
            "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert))
    return cert, key


def client_context(ca):
    ctx = ssl.create_default_context(cafile=str(ca))  # verifies the chain and the host name
    return ctx


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    ca = make_ca(d, "test-ca")
    cert, key = make_server_cert(d, ca, "server")
    # The listeners read these paths; renewals replace them.
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(cert, live / "cert.pem")
    shutil.copy(key, live / "key.pem")
    return {"dir": d, "ca": ca, "cert": live / "cert.pem", "key": live / "key.pem"}


@pytest.fixture
def tls_iotd(tmp_path, pki):
    server = Iotd(tmp_path / "data",
                  env={"STORE": "sqlite", "TLS_CERT_FILE": str(pki["cert"]),
                       "TLS_KEY_FILE": str(pki["key"])},
                  tls=client_context(pki["ca"])).start()
    yield server
    server.stop()


def test_readings_go_in_and_come_out_over_https_with_a_checked_certificate(tls_iotd):
    r = tls_iotd.post(READING)
    assert r.status == 202, r.body
    assert eventually(lambda: tls_iotd.get("/devices/tls-dev/telemetry").status == 200)
    rows = tls_iotd.get("/devices/tls-dev/telemetry").json()
    assert rows[0]["temperature_c"] == 21.5


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_iotd, tmp_path):
    other_ca = make_ca(tmp_path / "pki", "other-ca")
    with pytest.raises(urllib.error.URLError) as e:
        request("GET", tls_iotd.dash("/health"), context=client_context(other_ca))
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)


def test_plain_http_gets_no_answer_on_a_tls_port(tls_iotd):
    with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):
        request("GET", f"http://127.0.0.1:{tls_iotd.dashboard_port}/health", timeout=5)
    assert tls_iotd.get("/health").status == 200


def test_the_live_stream_works_over_https(tls_iotd):
    sse = SseClient(tls_iotd.dashboard_port, "?device_id=tls-dev", tls=tls_iotd.tls)
    try:
        assert eventually(lambda: sse.head is not None, timeout=10), "no stream head"
        assert sse.head.startswith("HTTP/1.1 200")
        assert tls_iotd.post(READING).status == 202
        assert eventually(lambda: sse.of("reading"), timeout=10), "no reading event over TLS"
    finally:
        sse.close()


def test_a_renewed_certificate_is_served_without_a_restart(tls_iotd, pki):
    new_ca = make_ca(pki["dir"], "new-ca")
    cert, key = make_server_cert(pki["dir"], new_ca, "renewed")
    # Replace both files by renames, as certbot and Kubernetes Secret updates do.
    shutil.copy(key, pki["key"].with_suffix(".tmp"))
    os.replace(pki["key"].with_suffix(".tmp"), pki["key"])
    shutil.copy(cert, pki["cert"].with_suffix(".tmp"))
    os.replace(pki["cert"].with_suffix(".tmp"), pki["cert"])
    new_ctx = client_context(new_ca)

    def served_new():
        try:
            return request("GET", tls_iotd.dash("/health"), context=new_ctx, timeout=2).status == 200
        except (urllib.error.URLError, OSError):
            return False

    assert eventually(served_new, timeout=20, interval=0.5), "the renewed certificate is not served"
    assert tls_iotd.proc.poll() is None


def test_iotd_health_probes_https_listeners(tls_iotd, pki):
    env = dict(os.environ, TLS_CERT_FILE=str(pki["cert"]),
               INGEST_PORT=str(tls_iotd.ingest_port), DASHBOARD_PORT=str(tls_iotd.dashboard_port),
               AGGREGATOR_PORT="1", ALERTS_PORT="1")
    out = subprocess.run([IOTD, "health"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"https://127.0.0.1:{tls_iotd.dashboard_port}/health: healthy" in out.stdout


@pytest.mark.parametrize("env,message", [
    ({"TLS_CERT_FILE": "/nonexistent/cert.pem", "TLS_KEY_FILE": "/nonexistent/key.pem"},
     "/nonexistent/cert.pem"),
    ({"TLS_CERT_FILE": "/nonexistent/cert.pem"}, "TLS_KEY_FILE"),
])
def test_bad_tls_settings_stop_the_start_naming_the_problem(tmp_path, env, message):
    full = dict(os.environ, DATA_DIR=str(tmp_path / "data"), INGEST_PORT="0", DASHBOARD_PORT="0",
                BIND_ADDRESS="127.0.0.1", **env)
    out = subprocess.run([IOTD, "all"], env=full, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


# --- MongoDB over TLS (MONGO_URL's tls options) ----------------------------------------------------

@pytest.fixture
def tls_ferretdb(tmp_path, pki):
    """FerretDB listening with TLS only, its certificate signed by the test CA."""
    data = tmp_path / "ferretdb"
    data.mkdir()
    log = open(tmp_path / "ferretdb.log", "wb")
    proc = subprocess.Popen([ferretdb_binary(), "--listen-addr", "", "--listen-tls", "127.0.0.1:0",
                             "--listen-tls-cert-file", str(pki["cert"]),
                             "--listen-tls-key-file", str(pki["key"]),
                             "--sqlite-url", f"file:{data}/"], stdout=subprocess.PIPE, stderr=log)
    line = proc.stdout.readline()
    m = re.match(rb"ferretdb listening on mongodb://127\.0\.0\.1:(\d+)/", line)
    assert m, line
    yield int(m.group(1))
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()
    log.close()


def test_the_mongodb_store_connects_over_tls_checking_the_servers_certificate(
        tmp_path, pki, tls_ferretdb):
    url = (f"mongodb://localhost:{tls_ferretdb}/?tls=true&tlsCAFile={pki['ca']}")
    server = Iotd(tmp_path / "data", env={"STORE": "mongodb", "MONGO_URL": url,
                                          "MONGO_DB": "tlsdb"}).start()
    try:
        assert server.post(READING).status == 202
        assert eventually(lambda: server.get("/devices/tls-dev/telemetry").status == 200)
    finally:
        server.stop()


def test_the_mongodb_store_refuses_a_server_it_cannot_verify(tmp_path, tls_ferretdb):
    # No tlsCAFile: the system's CAs do not know the test CA, so the connection must fail.
    url = f"mongodb://localhost:{tls_ferretdb}/?tls=true"
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), INGEST_PORT="0", DASHBOARD_PORT="0",
               BIND_ADDRESS="127.0.0.1", STORE="mongodb", MONGO_URL=url, MONGO_DB="tlsdb",
               MONGO_TIMEOUT="2s")
    out = subprocess.run([IOTD, "all"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "TLS handshake failed: certificate verify failed" in out.stdout + out.stderr, \
        out.stderr[-2000:]


# --- Kafka over SASL_SSL (KAFKA_CONFIG) ------------------------------------------------------------

@pytest.fixture
def secure_kafka(tmp_path, pki):
    from kafka_broker import KafkaBroker
    # Kafka's PEM key store: the private key in PKCS#8, then the certificate.
    keystore = tmp_path / "kafka-keystore.pem"
    pkcs8 = subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(pki["key"])],
                           check=True, capture_output=True, text=True).stdout
    keystore.write_text(pkcs8 + pki["cert"].read_text())
    broker = KafkaBroker(tmp_path / "kafka", secure={"keystore": str(keystore),
                                                     "users": {"iotd": "s3cret"}}).start()
    yield broker
    broker.kill()


def kafka_env(broker, ca, password):
    return {"BUS": "kafka", "STORE": "sqlite",
            "KAFKA_BOOTSTRAP_SERVERS": f"localhost:{broker.secure_port}",
            "KAFKA_CONFIG": f"security.protocol=SASL_SSL;sasl.mechanisms=PLAIN;"
                            f"sasl.username=iotd;sasl.password={password};ssl.ca.location={ca}",
            "KAFKA_TIMEOUT": "10s"}


def test_kafka_over_sasl_ssl_with_a_checked_certificate(tmp_path, pki, secure_kafka):
    server = Iotd(tmp_path / "data", env=kafka_env(secure_kafka, pki["ca"], "s3cret")).start()
    try:
        assert server.post(READING).status == 202
        assert eventually(lambda: server.get("/devices/tls-dev").status == 200, timeout=60)
    finally:
        server.stop()


@pytest.mark.parametrize("what", ["wrong password", "unknown CA"])
def test_kafka_refuses_wrong_credentials_or_an_unverified_broker(tmp_path, pki, secure_kafka,
                                                                   what):
    ca = pki["ca"]
    password = "s3cret"
    if what == "wrong password":
        password = "guess"
    else:
        ca = make_ca(tmp_path, "stranger")
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "INGEST_PORT": "0",
           "DASHBOARD_PORT": "0", "BIND_ADDRESS": "127.0.0.1",
           **kafka_env(secure_kafka, ca, password), "KAFKA_TIMEOUT": "5s"}
    out = subprocess.run([IOTD, "all"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0, out.stdout[-2000:]
    text = (out.stdout + out.stderr).lower()
    assert ("authentication" in text) if what == "wrong password" else ("certificate" in text), \
        text[-2000:]
