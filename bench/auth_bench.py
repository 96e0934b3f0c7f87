#!/usr/bin/env python3
"""auth_bench.py: the cost of authentication on POST /ingest (issue 7's target: at most 10%
fewer requests per second with INGEST_AUTH=token than with it off).

  bench/auth_bench.py --iotd build/release/src/app/iotd [--runs 3] [--seconds 10]

One `iotd all` per setting, in a fresh DATA_DIR; the same load for both: `iotd loadgen
--unthrottled`, one reading per POST /ingest, keep-alive connections, 100 devices; with auth the
loadgen sends a gateway token of dev-1..dev-100 (--token). Runs alternate off / token (and which
goes first) so that drift of the machine hits both; the figure is the median of --runs accepted requests per second.
Measured twice: with the default durability (SYNC=full: a group commit per fsync, what users run)
and with SYNC=off (the CPU-bound case, where the check's share of the work is largest).
Prints a table; asserts nothing about timing.
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request

from system_bench import free_port  # the sibling benchmark's helper

DEVICES = 100


def wait_ready(url, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("iotd exited at start-up")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("iotd did not get ready")


def run_once(iotd, auth, sync, seconds, connections):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="auth-bench-"))
    try:
        env = dict(os.environ, DATA_DIR=str(tmp / "data"), BIND_ADDRESS="127.0.0.1",
                   INGEST_PORT=str(free_port()), DASHBOARD_PORT=str(free_port()), SYNC=sync,
                   LOG_LEVEL="warn", INGEST_AUTH="token" if auth else "off",
                   TOKENS_FILE=str(tmp / "tokens"))
        # The same preparation for both settings (creating tokens writes and syncs files):
        # other tokens in the file too, as in a real fleet (the lookup is a hash map).
        for i in range(100):
            subprocess.run([iotd, "token", "create", "--device", f"other-{i}"], env=env,
                           check=True, capture_output=True, timeout=30)
        ids = ",".join(f"dev-{i}" for i in range(1, DEVICES + 1))
        token = subprocess.run([iotd, "token", "create", "--gateway", ids], env=env,
                               check=True, capture_output=True, text=True,
                               timeout=30).stdout.strip() if auth else ""
        os.sync()  # start from a quiet disk: the previous run's writes are not this one's cost
        proc = subprocess.Popen([iotd, "all"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_ready(f"http://127.0.0.1:{env['INGEST_PORT']}/ready", proc)
            cmd = [iotd, "loadgen", "--base-url", f"http://127.0.0.1:{env['INGEST_PORT']}",
                   "--devices", str(DEVICES), "--unthrottled", "--connections", str(connections),
                   "--duration", f"{seconds}s"]
            if token:
                cmd += ["--token", token]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
            m = re.search(r"(\d+) sent, (\d+) accepted \(2xx\), (\d+) rejected", out)
            d = re.search(r"duration:\s+([\d.]+) s", out)
            p99 = re.search(r"p99 ([\d.]+) ms", out)
            if not m or not d:
                raise RuntimeError("unexpected loadgen output:\n" + out)
            sent, accepted, rejected = map(int, m.groups())
            if rejected:
                raise RuntimeError(f"{rejected} requests rejected: the token is not accepted")
            return {"rps": accepted / float(d.group(1)), "p99_ms": float(p99.group(1))}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iotd", default="build/release/src/app/iotd")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    rows = []
    for sync in ("full", "off"):
        got = {False: [], True: []}
        for i in range(args.runs):
            # Alternating which goes first, so that neither always follows the other's cleanup.
            for auth in ((False, True) if i % 2 == 0 else (True, False)):
                r = run_once(args.iotd, auth, sync, args.seconds, args.connections)
                got[auth].append(r)
                print(f"SYNC={sync} INGEST_AUTH={'token' if auth else 'off'} run {i + 1}: "
                      f"{r['rps']:,.0f} requests/s, p99 {r['p99_ms']:.2f} ms", flush=True)
        off = statistics.median(r["rps"] for r in got[False])
        on = statistics.median(r["rps"] for r in got[True])
        rows.append({"sync": sync, "off_rps": off, "token_rps": on,
                     "change_pct": 100.0 * (on - off) / off,
                     "off_p99_ms": statistics.median(r["p99_ms"] for r in got[False]),
                     "token_p99_ms": statistics.median(r["p99_ms"] for r in got[True])})
    print()
    print(f"POST /ingest, {DEVICES} devices, {args.connections} connections, "
          f"median of {args.runs} runs of {args.seconds} s (target: at most 10% fewer with auth)")
    print(f"{'SYNC':<6} {'auth off req/s':>15} {'auth token req/s':>17} {'change':>8} "
          f"{'p99 off':>9} {'p99 token':>10}")
    for r in rows:
        print(f"{r['sync']:<6} {r['off_rps']:>15,.0f} {r['token_rps']:>17,.0f} "
              f"{r['change_pct']:>+7.1f}% {r['off_p99_ms']:>7.2f}ms {r['token_p99_ms']:>8.2f}ms")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
