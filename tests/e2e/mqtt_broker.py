"""A real Mosquitto broker (Debian's `mosquitto`) for the MQTT tests, on a free port of
127.0.0.1 with a generated configuration, and `mosquitto_pub` to publish with.

    broker = MosquittoBroker(tmp_path / "mqtt").start()
    broker.url              # mqtt://127.0.0.1:PORT
    broker.publish("devices/dev-1/telemetry", '{"temperature_c": 21, "humidity": 40}')
    broker.publish_lines("devices/dev-1/telemetry", payloads)   # one message per line, QoS 1
    broker.stop()

The broker keeps QoS 1 messages for a disconnected persistent session without limit (the
default is 1000), so that a test that kills iotd mid-stream finds every message queued.
"""
import os
import shutil
import socket
import subprocess
import time

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoBroker:
    def __init__(self, directory, tls=None):
        """`tls`: {"cafile", "certfile", "keyfile", "require_certificate"} for a TLS listener."""
        self.tls = tls
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = None
        self.proc = None
        self.log_path = self.dir / "mosquitto.log"

    @property
    def url(self):
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout=10):
        for _ in range(5):
            self.port = free_port()
            conf = self.dir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\n"
                "allow_anonymous true\n"
                # Run as root stays root (its files are in the test's private temporary
                # directory); as another user this line is ignored.
                "user root\n"
                "persistence false\n"
                "max_queued_messages 0\n"
                "max_queued_bytes 0\n"
                "max_inflight_messages 0\n"
                "set_tcp_nodelay true\n"
                + self._tls_conf() +
                f"log_dest file {self.log_path}\n"
                "log_type error\nlog_type warning\nlog_type notice\n")
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            self.stop()  # the port was taken meanwhile, or it did not start: try another
        raise AssertionError("mosquitto did not start: " + self.tail())

    def _tls_conf(self):
        if not self.tls:
            return ""
        return (f"cafile {self.tls['cafile']}\ncertfile {self.tls['certfile']}\n"
                f"keyfile {self.tls['keyfile']}\n"
                f"require_certificate {str(self.tls.get('require_certificate', False)).lower()}\n")

    def publish(self, topic, payload, qos=1, timeout=10, tls_args=()):
        subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.port), "-q", str(qos),
                        "-t", topic, "-m", payload, *tls_args], check=True, timeout=timeout)

    def publish_lines(self, topic, payloads, qos=1, timeout=60):
        """Publishes each payload (no newline inside) as one message, in order, over one
        connection (`mosquitto_pub -l`)."""
        subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.port), "-q", str(qos),
                        "-t", topic, "-l"], input="\n".join(payloads) + "\n", text=True,
                       check=True, timeout=timeout)

    def tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
