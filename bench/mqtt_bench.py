#!/usr/bin/env python3
"""mqtt_bench.py: MQTT readings per second through one `iotd all` process with QoS 1
(docs/mqtt.md), from the libmosquitto load generator on the same machine through a local
Mosquitto broker (Debian's). Target of issue 7: at least 100,000 readings/s.

  bench/mqtt_bench.py --iotd build/release/src/app/iotd [--runs 3]

Each run starts a fresh broker and a fresh `iotd all` (embedded bus, SYNC=full), publishes a
fixed number of messages as fast as the broker acknowledges them (`iotd loadgen --mqtt-url
--unthrottled --count`), and measures from the first publish until iotd's
mqtt_readings_accepted_total (readings durable on the bus, then acknowledged to the broker)
reaches the total. Two shapes: one reading per message, and arrays of 100 readings per message.
Prints the median of --runs runs per shape. Asserts nothing.
"""
import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests/e2e"))
from mqtt_broker import MosquittoBroker  # noqa: E402


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def start_iotd(iotd, tmp, broker):
    log = open(tmp / "iotd.log", "wb")
    env = {"DATA_DIR": str(tmp / "data"), "INGEST_PORT": "0", "DASHBOARD_PORT": "0",
           "BIND_ADDRESS": "127.0.0.1", "MQTT_URL": broker.url, "LOG_LEVEL": "warn",
           "PATH": "/usr/bin:/bin"}
    # LOG_LEVEL=warn hides the port line: read it at info, then nothing else is logged per message.
    env["LOG_LEVEL"] = "info"
    proc = subprocess.Popen([iotd, "all"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    port = None
    while time.monotonic() < deadline and port is None:
        for line in (tmp / "iotd.log").read_text().splitlines():
            if "ingest listening on port " in line:
                port = int(line.split("ingest listening on port ")[1].split('"')[0])
        time.sleep(0.05)
    while time.monotonic() < deadline and metric(port, "mqtt_connected") != 1:
        time.sleep(0.05)
    return proc, port


def run_once(iotd, messages, batch):
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        broker = MosquittoBroker(tmp / "mqtt").start()
        proc, port = start_iotd(iotd, tmp, broker)
        try:
            total = messages * max(batch, 1)
            start = time.monotonic()
            lg = subprocess.Popen([iotd, "loadgen", "--mqtt-url", broker.url, "--devices", "1000",
                                   "--count", str(messages), "--batch", str(batch),
                                   "--unthrottled", "--connections", "2",
                                   "--max-inflight", "20000"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            deadline = start + 300
            while time.monotonic() < deadline and metric(port, "mqtt_readings_accepted_total") < total:
                time.sleep(0.02)
            elapsed = time.monotonic() - start
            lg.wait(timeout=60)
            done = metric(port, "mqtt_readings_accepted_total")
            return done / elapsed
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            broker.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iotd", default=str(HERE.parent / "build/release/src/app/iotd"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--messages", type=int, default=300000, help="messages of one reading")
    ap.add_argument("--batch-messages", type=int, default=20000, help="messages of 100 readings")
    args = ap.parse_args()
    results = {}
    for label, messages, batch in [("1 reading per message", args.messages, 0),
                                   ("100 readings per message", args.batch_messages, 100)]:
        rates = []
        for i in range(args.runs):
            rate = run_once(args.iotd, messages, batch)
            print(f"{label}: run {i + 1}: {rate:,.0f} readings/s", flush=True)
            rates.append(rate)
        results[label] = statistics.median(rates)
    print("\nMQTT ingestion, QoS 1, one iotd all, SYNC=full (median of "
          f"{args.runs} runs; target 100,000 readings/s)")
    for label, rate in results.items():
        print(f"  {label:<26} {rate:>12,.0f} readings/s")


if __name__ == "__main__":
    main()
