#!/usr/bin/env python3
"""kafka_bench.py: distributed mode (BUS=kafka) measured on one local Kafka broker.

The script starts its own Kafka 3.9 broker (tests/e2e/kafka_broker.py; jars from
`scripts/kafka.sh build`) and the iotd roles (tests/e2e/distributed.py: free ports, a topic and
consumer groups of their own per run), so broker, iotd and the load generator share this
machine's cores. Every figure is the median of --runs runs; the table at the end goes into
docs/performance.md ("Distributed mode (Kafka)").

  bench/kafka_bench.py --iotd build/release/src/app/iotd [--runs 3] [--duration 10s]

Measures:
  1. POST /ingest, one reading, 64 connections (wrk -t2 -c64, bench/post.lua) through one
     `iotd ingest`: requests/s acknowledged by Kafka, p50/p99. Once per --variants entry
     (KAFKA_LINGER:connections); the first, the product's default with 64 connections, is the
     figure the target and (3) use, the others show what limits it.
  2. POST /ingest/batch, 1,000 readings per request (iotd loadgen --unthrottled) through one
     `iotd ingest`: readings/s, once per --batch-connections entry (4, as system_bench.py, and
     more); the target is judged on the best of them.
  3. End-to-end lag at half of (1)'s rate: `iotd all` (BUS=kafka, STORE=sqlite) under a paced
     loadgen stream; --probes readings of fresh devices, sent at --probe-rate, each polled on
     GET /devices/{id} until it is visible: the time from its 202 to then.
  4. One aggregator's catch-up: --prefill readings put on the topic through `iotd ingest`, then
     `iotd all` (BUS=kafka, STORE=sqlite: aggregator and alerts in one process) started on it
     and timed until aggregator_committed_offset reaches the topic's end on every partition.
     Once per --catchup-configs entry (KAFKA_CONFIG of `iotd all`; the first, empty, is the
     product's default; the second shows librdkafka 2.0's fetch back-off, see performance.md).

After each run the topic's end offsets are checked against ingest_readings_accepted_total (every
acknowledged reading is in Kafka, once), and in (4) /stats against the topic (every reading
stored once). A failed check is printed and listed at the end; it does not stop the bench.
"""
import argparse
import concurrent.futures
import http.client
import json
import math
import os
import pathlib
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests/e2e"))

from system_bench import POST_LUA, loadgen, median, wrk  # noqa: E402

TARGETS = {"single_rps": 50_000, "batch_readings_per_s": 500_000, "lag_p99_ms": 1000}
CLK_TCK = os.sysconf("SC_CLK_TCK")
failed_checks = []


# --- measuring helpers -----------------------------------------------------------------------

def percentile(xs, p):
    """The nearest-rank p-th percentile of xs (p99 of 200 samples: the second largest)."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def wrk_percentile_ms(out, pct):
    """A percentile line of `wrk --latency` output ("  50%  7.15ms"), in milliseconds."""
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def stat_cpu_s(path):
    """User + system CPU seconds from a /proc/.../stat file."""
    fields = open(path).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu_s(pid):
    """User + system CPU seconds of a running process (all its threads)."""
    return stat_cpu_s(f"/proc/{pid}/stat")


def thread_cpu_s(pid):
    """CPU seconds per thread name of a running process (threads of one name summed)."""
    by_name = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            by_name[name] = by_name.get(name, 0.0) + stat_cpu_s(task / "stat")
        except OSError:
            pass  # the thread ended meanwhile
    return by_name


def machine_cpu_s():
    """CPU seconds the whole machine spent busy (not idle, not waiting for I/O) and waiting for
    I/O, summed over its cores."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK, v[4] / CLK_TCK


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuSplit:
    """CPU used during a measurement by the broker, one iotd process, the load generator (this
    script's reaped children: wrk, iotd loadgen), this script (the probes of (3)) and everything
    else: other users of the machine, and kernel time no process is charged for. Also the time
    the cores sat waiting for the disk, and the iotd process's CPU per thread."""

    def __init__(self, broker_pid, iotd_pid):
        self.pids = {"broker": broker_pid, "iotd": iotd_pid, "script": os.getpid()}

    def __enter__(self):
        self.start = {k: process_cpu_s(p) for k, p in self.pids.items()}
        self.start_threads = thread_cpu_s(self.pids["iotd"])
        self.start_client, self.start_machine = children_cpu_s(), machine_cpu_s()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        self.used = {k: process_cpu_s(p) - self.start[k] for k, p in self.pids.items()}
        self.used["client"] = children_cpu_s() - self.start_client
        busy, iowait = (end - start for end, start in zip(machine_cpu_s(), self.start_machine))
        self.used["other"] = max(0.0, busy - sum(self.used.values()))
        self.iowait = iowait
        end_threads = thread_cpu_s(self.pids["iotd"])
        self.threads = {k: v - self.start_threads.get(k, 0.0) for k, v in end_threads.items()}

    def summary(self, n_threads=5):
        """Two indented lines: each party's average number of busy cores and the cores' worth
        of time spent waiting for I/O; the iotd process's busiest threads, in busy cores."""
        parts = [f"{k} {v / self.wall:.2f}" for k, v in self.used.items()]
        top = sorted(self.threads.items(), key=lambda kv: -kv[1])[:n_threads]
        return (f"\n     busy cores: {', '.join(parts)}; I/O wait {self.iowait / self.wall:.2f}"
                f"\n     iotd threads: {', '.join(f'{k} {v / self.wall:.2f}' for k, v in top)}")


# --- Kafka and the roles ---------------------------------------------------------------------

def end_offsets(bootstrap, topic, partitions):
    """The sum over partitions of the topic's end offsets (kcat -Q, timestamp -1 = the end)."""
    args = [a for p in range(partitions) for a in ("-t", f"{topic}:{p}:-1")]
    out = subprocess.run(["/usr/bin/kcat", "-b", bootstrap, "-Q", *args], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    offsets = [int(x) for x in re.findall(r"offset (-?\d+)", out)]
    assert len(offsets) == partitions, out
    return sum(offsets)


def metric_sum(role, name):
    """The sum of a per-partition gauge over the partitions the role reports."""
    return sum(role.metrics_matching(name + "{").values())


def check(ok, what):
    if not ok:
        failed_checks.append(what)
        print(f"   CHECK FAILED: {what}", flush=True)


def check_topic_holds_accepted(cluster, ingest, bootstrap):
    """Every reading ingest acknowledged is on the topic, once: once nothing waits for the
    broker's acknowledgement any more, the topic's end offsets equal the readings acknowledged
    (a reading counts as acknowledged when the broker acknowledged it, even if its client left
    before the 202)."""
    from conftest import eventually  # imported late: see main()
    check(eventually(lambda: ingest.metric("kafka_producer_pending_messages") == 0, timeout=30),
          f"{cluster.topic}: readings still pending after 30 s")
    accepted = ingest.metric("ingest_readings_accepted_total")
    on_topic = end_offsets(bootstrap, cluster.topic, int(cluster.env["KAFKA_PARTITIONS"]))
    check(on_topic == accepted, f"{cluster.topic}: {on_topic} on the topic, {accepted:.0f} "
                                "acknowledged")
    return on_topic


def start_ingest(cluster):
    """`iotd ingest`, ready and warm: /ready answers before the idempotent producer has its
    producer id, and the first readings wait for it (up to ~0.5 s on a fresh broker)."""
    ingest = cluster.start("ingest")
    r = ingest.post({"device_id": "warm-up", "temperature_c": 20.0, "humidity": 40.0})
    assert r.status == 202, (r.status, r.body, ingest.tail())
    return ingest


class Bench:
    """The four measurements, each on fresh topics of the one broker; every role it starts is
    stopped before the measurement returns."""

    def __init__(self, args, broker, work):
        self.args = args
        self.broker = broker
        self.work = work
        self.n = 0

    def cluster(self, name, **env):
        """A fresh Cluster (its own topics, groups and DATA_DIR) on the shared broker."""
        from distributed import Cluster  # imported late: see main()
        self.n += 1
        # STORE=sqlite everywhere: no MongoDB is started, so its URL is never used.
        return Cluster(self.work / f"{self.n}-{name}", self.broker.bootstrap, "mongodb://unused",
                       f"bench-{name}", {"STORE": "sqlite", **env})

    # 1. Single readings through one ingest.
    def single(self, linger, connections):
        rates, p50s, p99s = [], [], []
        for run in range(self.args.runs):
            c = self.cluster(f"single-{linger}-{connections}", KAFKA_LINGER=linger)
            try:
                ingest = start_ingest(c)
                with CpuSplit(self.broker.pid, ingest.proc.pid) as cpu:
                    w = wrk(ingest.url("/ingest", "ingest"), connections=connections,
                            script=POST_LUA, duration=self.args.duration, latency=True)
                check(w["non2xx"] == 0, f"{w['non2xx']} non-2xx answers:\n{w['out']}")
                check_topic_holds_accepted(c, ingest, self.broker.bootstrap)
            finally:
                c.stop_all()
            rates.append(w["rps"])
            p50s.append(wrk_percentile_ms(w["out"], 50))
            p99s.append(w["p99_ms"])
            print(f"   run {run} (KAFKA_LINGER={linger}, {connections} connections): "
                  f"{w['rps']:,.0f} req/s, p50 {p50s[-1]:.2f} ms, p99 {p99s[-1]:.2f} ms"
                  + cpu.summary(), flush=True)
        return {"rps": median(rates), "p50_ms": median(p50s), "p99_ms": median(p99s)}

    # 2. Batches through one ingest.
    def batch(self, connections):
        rates, p50s, p99s = [], [], []
        for run in range(self.args.runs):
            c = self.cluster(f"batch-{connections}")
            try:
                ingest = start_ingest(c)
                with CpuSplit(self.broker.pid, ingest.proc.pid) as cpu:
                    r = loadgen(self.args.iotd, ingest.url("", "ingest"), "--devices", "1000",
                                "--batch", "1000", "--unthrottled", "--connections",
                                str(connections), "--duration", self.args.duration)
                check(r["errors"] == 0, f"{r['errors']} loadgen errors:\n{r['out']}")
                check_topic_holds_accepted(c, ingest, self.broker.bootstrap)
            finally:
                c.stop_all()
            rates.append(r["readings_per_s"])
            p50s.append(r["p50_ms"])
            p99s.append(r["p99_ms"])
            print(f"   run {run} ({connections} connections): {r['readings_per_s']:,.0f} "
                  f"readings/s ({r['rps']:.0f} requests/s, p50 {r['p50_ms']:.1f} ms, p99 "
                  f"{r['p99_ms']:.1f} ms)" + cpu.summary(), flush=True)
        return {"readings_per_s": median(rates), "p50_ms": median(p50s), "p99_ms": median(p99s)}

    # 3. End-to-end lag under a paced stream.
    def lag(self, rate):
        p50s, p99s, maxes, achieved = [], [], [], []
        probe_s = self.args.probes / self.args.probe_rate
        for run in range(self.args.runs):
            c = self.cluster("lag")
            try:
                server = c.start("all")
                background = {}
                stream = threading.Thread(target=lambda: background.update(loadgen(
                    self.args.iotd, server.url("", "ingest"), "--devices", "100", "--rps",
                    f"{rate / 100:.2f}", "--connections", "64", "--duration",
                    f"{probe_s + 4:.0f}s")))
                stream.start()
                time.sleep(2)  # let the stream reach its rate before the first probe
                with CpuSplit(self.broker.pid, server.proc.pid) as cpu:
                    lags = self.probe(server, run)
                stream.join()
                assert "rps" in background, "the loadgen stream failed (see its error above)"
                visible = [x for x in lags if x is not None]
                assert visible, f"no probe became visible:\n{server.tail()}"
                check(len(visible) == len(lags),
                      f"{len(lags) - len(visible)} of {len(lags)} probes not visible within "
                      f"{self.args.probe_timeout} s")
                check(background["errors"] == 0, f"{background['errors']} loadgen errors")
            finally:
                c.stop_all()
            p50s.append(percentile(visible, 50) * 1000)
            p99s.append(percentile(visible, 99) * 1000)
            maxes.append(max(visible) * 1000)
            achieved.append(background["rps"])
            print(f"   run {run}: stream {background['rps']:,.0f} req/s (its p99 "
                  f"{background['p99_ms']:.1f} ms); {len(visible)} probes: 202 -> visible "
                  f"p50 {p50s[-1]:.0f} ms, p99 {p99s[-1]:.0f} ms, max {maxes[-1]:.0f} ms"
                  + cpu.summary(), flush=True)
        return {"rate": rate, "achieved_rps": median(achieved), "p50_ms": median(p50s),
                "p99_ms": median(p99s), "max_ms": median(maxes)}

    def probe(self, server, run):
        """Sends --probes readings of fresh devices at --probe-rate; returns, per probe, the
        seconds from its 202 until GET /devices/{id} finds it (None: refused or never seen)."""
        ingest_port, dash_port = server.ports["ingest"], server.ports["dashboard"]

        def one(i):
            device = f"probe-{run}-{i}"
            body = json.dumps({"device_id": device, "temperature_c": 21.5, "humidity": 48.2})
            conn = http.client.HTTPConnection("127.0.0.1", ingest_port, timeout=10)
            conn.request("POST", "/ingest", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            acked = time.monotonic()
            conn.close()
            if r.status != 202:
                return None
            dash = http.client.HTTPConnection("127.0.0.1", dash_port, timeout=10)
            try:
                while time.monotonic() - acked < self.args.probe_timeout:
                    dash.request("GET", f"/devices/{device}")
                    r = dash.getresponse()
                    r.read()
                    if r.status == 200:
                        return time.monotonic() - acked
                    time.sleep(self.args.poll_interval)
                return None
            finally:
                dash.close()

        with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
            t0, futures = time.monotonic(), []
            for i in range(self.args.probes):
                time.sleep(max(0.0, t0 + i / self.args.probe_rate - time.monotonic()))
                futures.append(pool.submit(one, i))
            return [f.result() for f in futures]

    # 4. One aggregator catching up with a pre-filled topic.
    def catchup(self, kafka_config):
        rates, agg_s, alerts_s, totals = [], [], [], []
        for run in range(self.args.runs):
            c = self.cluster("catchup")
            try:
                total = self.prefill(c)
                t0 = time.monotonic()
                server = c.start("all", KAFKA_CONFIG=kafka_config)
                ready_s = time.monotonic() - t0
                with CpuSplit(self.broker.pid, server.proc.pid) as cpu:
                    done = self.wait_caught_up(server, total, t0)
                stored = json.loads(server.get("/stats").body)["total_telemetry"]
                check(stored == total, f"{stored} stored, {total} on the topic")
            finally:
                c.stop_all()
            totals.append(total)
            agg_s.append(done["aggregator"])
            alerts_s.append(done["alerts"])
            rates.append(total / done["aggregator"])
            print(f"   run {run}: {total:,} readings; ready after {ready_s:.1f} s, aggregator "
                  f"caught up after {done['aggregator']:.1f} s ({rates[-1]:,.0f} readings/s), "
                  f"alerts after {done['alerts']:.1f} s" + cpu.summary(), flush=True)
        return {"readings": (min(totals), max(totals)), "aggregator_s": median(agg_s),
                "alerts_s": median(alerts_s), "readings_per_s": median(rates)}

    def prefill(self, cluster):
        """Puts at least --prefill readings on the cluster's topic through one ingest (loadgen
        batches of 1,000) and stops it; returns how many the topic holds."""
        ingest = start_ingest(cluster)
        while (ingest.metric("ingest_readings_accepted_total") or 0) < self.args.prefill:
            loadgen(self.args.iotd, ingest.url("", "ingest"), "--devices", "1000", "--batch",
                    "1000", "--unthrottled", "--connections", "4", "--duration", "1s")
        total = check_topic_holds_accepted(cluster, ingest, self.broker.bootstrap)
        ingest.stop()
        return total

    def wait_caught_up(self, server, total, t0, timeout=600):
        """Seconds from t0 until each worker's committed offsets sum to `total`."""
        done = {}
        deadline = time.monotonic() + timeout
        while len(done) < 2:
            assert time.monotonic() < deadline, f"workers not caught up:\n{server.tail()}"
            for worker in ("aggregator", "alerts"):
                if worker not in done and metric_sum(server, f"{worker}_committed_offset") >= total:
                    done[worker] = time.monotonic() - t0
            time.sleep(0.05)
        return done


# --- the run ---------------------------------------------------------------------------------

def machine_notes():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.machine())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model}), {mem_gib:.0f} GiB; load average {load}"


def met(ok):
    return "met" if ok else "missed"


def report(results, variants, args, started):
    s, batches = results.get("single", {}), results.get("batch", {})
    print("\n== results (medians of %d runs)" % args.runs)
    print(f"{'measure':56} {'median':>14}  target")
    for variant in variants:
        r = s.get(variant)
        if r:
            ok = met(r["rps"] >= TARGETS["single_rps"]) if variant == variants[0] else "-"
            label = f"POST /ingest req/s, KAFKA_LINGER={variant[0]}, {variant[1]} conns"
            print(f"{label:56} "
                  f"{r['rps']:>14,.0f}  >= 50,000: {ok}")
            print(f"{'  p50 / p99 ms':56} {r['p50_ms']:>6.2f} / {r['p99_ms']:<6.2f}")
    best = max((b["readings_per_s"] for b in batches.values()), default=0)
    for connections, b in batches.items():
        ok = met(best >= TARGETS["batch_readings_per_s"]) if b["readings_per_s"] == best else "-"
        label = f"POST /ingest/batch readings/s, 1,000 per request, {connections} conns"
        print(f"{label:56} {b['readings_per_s']:>14,.0f}  >= 500,000: {ok}")
        print(f"{'  request p50 / p99 ms':56} {b['p50_ms']:>6.1f} / {b['p99_ms']:<6.1f}")
    lag = results.get("lag")
    if lag:
        print(f"{'stream rate (half of the single rate) req/s':56} {lag['rate']:>14,.0f}  "
              f"(achieved {lag['achieved_rps']:,.0f})")
        print(f"{'202 -> visible on the dashboard, p50 ms':56} {lag['p50_ms']:>14,.0f}")
        print(f"{'202 -> visible on the dashboard, p99 ms':56} {lag['p99_ms']:>14,.0f}  "
              f"< 1,000: {met(lag['p99_ms'] < TARGETS['lag_p99_ms'])}")
        print(f"{'202 -> visible on the dashboard, max ms':56} {lag['max_ms']:>14,.0f}")
    for kafka_config, c in results.get("catchup", {}).items():
        label = "catch-up of {:,}-{:,} readings: aggregator s".format(*c["readings"])
        print(f"{label:56} {c['aggregator_s']:>14.1f}  (alerts {c['alerts_s']:.1f} s)")
        label = "  one aggregator replica, readings/s"
        print(f"{label:56} {c['readings_per_s']:>14,.0f}  KAFKA_CONFIG={kafka_config!r}")
    print(f"\nchecks: {'all passed' if not failed_checks else '; '.join(failed_checks)}")
    print(f"machine at the end: {machine_notes()}")
    print(f"total time: {time.monotonic() - started:.0f} s")
    print("command: " + " ".join(shlex.quote(a) for a in ["python3", *sys.argv]))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iotd", default=str(ROOT / "build/release/src/app/iotd"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", default="10s", help="of each wrk and loadgen run")
    ap.add_argument("--variants", default="5ms:64,1ms:64,5ms:512",
                    help="KAFKA_LINGER:connections of (1); the first is the target's")
    ap.add_argument("--batch-connections", default="4,16",
                    type=lambda v: [int(x) for x in v.split(",")],
                    help="loadgen connections of (2)")
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--probe-rate", type=float, default=10.0, help="probes per second")
    ap.add_argument("--probe-timeout", type=float, default=30.0, help="seconds")
    ap.add_argument("--poll-interval", type=float, default=0.005, help="seconds")
    ap.add_argument("--prefill", type=int, default=1_000_000)
    ap.add_argument("--catchup-configs", default="|queued.min.messages=2000000",
                    help="KAFKA_CONFIG values of (4), separated by |")
    ap.add_argument("--half-rate", type=float,
                    help="the stream rate of (3); default: half of (1)'s median")
    ap.add_argument("--steps", default="1,2,3,4", help="which measurements to run")
    return ap.parse_args()


def main():
    args = parse_args()
    # tests/e2e/conftest.py reads $IOTD when it is imported (distributed.py imports it), so
    # the e2e modules are imported only from here on.
    os.environ["IOTD"] = args.iotd
    from kafka_broker import KafkaBroker, kafka_libs
    steps = {int(x) for x in args.steps.split(",")}
    variants = [(v.split(":")[0], int(v.split(":")[1])) for v in args.variants.split(",")]
    # SIGTERM unwinds like Ctrl-C, so that every role and the broker are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    print(f"machine at the start: {machine_notes()}", flush=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="iotd-kafka-bench-",
                                         dir=os.environ.get("BENCH_DIR")))
    broker = KafkaBroker(work / "kafka")
    results = {}
    try:
        broker.start()
        jar = next(pathlib.Path(kafka_libs()).glob("kafka_2.13-*.jar"))
        print(f"broker: {jar.stem} on {broker.bootstrap}, pid {broker.pid}", flush=True)
        bench = Bench(args, broker, work)
        if 1 in steps:
            print("== 1. POST /ingest, one reading, through one iotd ingest (wrk -t2)",
                  flush=True)
            results["single"] = {v: bench.single(*v) for v in variants}
        if 2 in steps:
            print("== 2. POST /ingest/batch, 1,000 readings per request, through one iotd ingest",
                  flush=True)
            results["batch"] = {n: bench.batch(n) for n in args.batch_connections}
        if 3 in steps:
            rate = args.half_rate or results["single"][variants[0]]["rps"] / 2
            print(f"== 3. 202 -> visible, iotd all (BUS=kafka, STORE=sqlite) at {rate:,.0f} req/s",
                  flush=True)
            results["lag"] = bench.lag(rate)
        if 4 in steps:
            print(f"== 4. one aggregator catching up with {args.prefill:,} readings", flush=True)
            results["catchup"] = {}
            for kafka_config in args.catchup_configs.split("|"):
                print(f"   KAFKA_CONFIG={kafka_config!r}", flush=True)
                results["catchup"][kafka_config] = bench.catchup(kafka_config)
    finally:
        broker.stop()
        if failed_checks:
            print(f"kept the roles' and the broker's logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results, variants, args, started)
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
