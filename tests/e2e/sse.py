"""A client of GET /stream (Server-Sent Events) for the end-to-end tests."""
import json
import socket
import threading
import time


class SseClient:
    """Reads GET /stream over a raw socket on a thread; keeps the events and the bytes read."""

    def __init__(self, port, query="", rcvbuf=None, read=True, headers=None, tls=None):
        """`headers`: more request headers (e.g. Authorization); `tls`: an ssl.SSLContext, to read
        the stream over https (checking the certificate)."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        if tls:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET /stream{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream"
                          f"\r\n{extra}\r\n".encode())
        self.events = []  # (arrival time, event type, parsed data)
        self.bytes = 0
        self.head = None
        self.closed = False
        self.lock = threading.Lock()
        self.thread = None
        if read:
            self.start_reading()

    def start_reading(self):
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        buf = b""
        self.sock.settimeout(60)
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                now = time.monotonic()
                with self.lock:
                    self.bytes += len(chunk)
                buf += chunk
                if self.head is None:
                    if b"\r\n\r\n" not in buf:
                        continue
                    self.head, buf = buf.split(b"\r\n\r\n", 1)
                    self.head = self.head.decode()
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in block.decode().split("\n")
                                  if line and not line.startswith(":") and ": " in line)
                    if "event" in fields:
                        with self.lock:
                            self.events.append((now, fields["event"], json.loads(fields["data"])))
        except OSError:
            pass
        finally:
            self.closed = True

    def of(self, kind, pred=lambda d: True):
        with self.lock:
            return [(t, d) for (t, k, d) in self.events if k == kind and pred(d)]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
