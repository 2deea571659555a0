#!/usr/bin/env python3
"""Time from process start to READY=1: how long `jwkd serve` takes to be ready.

Each run binds a fresh AF_UNIX datagram socket (as systemd's $NOTIFY_SOCKET),
starts `jwkd serve --config CONFIG` with NOTIFY_SOCKET pointing at it, and
measures the wall time from just before the fork to the receipt of a datagram
holding READY=1. Then it sends SIGTERM and waits for the daemon to exit.

    bench/start-to-ready.py --binary target/release/jwkd --config jwkd.toml --runs 20

`--reset FILE` deletes FILE before each run (untimed): with the keyset file,
every run is a first start on an empty store. `--stop-after-ms N` waits N ms
after READY=1 before SIGTERM (untimed): jwkd before issue 15's fix installed
its SIGTERM handler only just after READY=1, so an immediate SIGTERM could kill
it (exit -15), which this tool reports as a failure.

The last line is for scripts:
    start_to_ready_ms median=<x> p90=<y> min=<z>
Exits non-zero, saying why, if READY=1 does not come within 10 s, the daemon
exits first, or it does not exit cleanly on SIGTERM.
Python 3 standard library only.
"""

import argparse
import math
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

READY_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 15.0


def fail(message, proc=None, log=None):
    """Stops the daemon if it runs, prints why (and its stderr), exits 1."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    print(f"start-to-ready: error: {message}", file=sys.stderr)
    if log is not None:
        log.seek(0)
        tail = log.read().decode(errors="replace").splitlines()[-20:]
        for line in tail:
            print(f"  jwkd: {line}", file=sys.stderr)
    sys.exit(1)


def one_run(binary, config, workdir, run, stop_after_ms):
    """Starts the daemon once; returns the milliseconds until READY=1."""
    # A fresh socket per run, so that no late datagram of the previous daemon
    # (STOPPING=1) is read as this one's.
    path = os.path.join(workdir, f"notify-{run}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    # No watchdog: only READY=1 matters here.
    env.pop("WATCHDOG_USEC", None)
    env.pop("WATCHDOG_PID", None)
    log = tempfile.TemporaryFile(dir=workdir)
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [binary, "serve", "--config", config],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        deadline = start + READY_TIMEOUT_S
        ready_at = None
        while ready_at is None:
            # Short waits, so that a daemon that exits is seen at once; a
            # datagram wakes select immediately, so this adds no latency.
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                message = sock.recv(4096)
                if b"READY=1" in message.split(b"\n"):
                    ready_at = time.perf_counter()
                continue
            if proc.poll() is not None:
                fail(f"jwkd exited with {proc.returncode} before READY=1", proc, log)
            if time.perf_counter() > deadline:
                fail(f"no READY=1 within {READY_TIMEOUT_S:.0f} s", proc, log)
        time.sleep(stop_after_ms / 1000.0)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            fail(f"jwkd did not exit within {EXIT_TIMEOUT_S:.0f} s of SIGTERM", proc, log)
        if code != 0:
            fail(f"jwkd exited with {code} after SIGTERM", proc, log)
        return (ready_at - start) * 1000.0
    finally:
        log.close()
        sock.close()
        os.unlink(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default="target/release/jwkd")
    parser.add_argument("--config", required=True, help="the config file to serve")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reset", help="a file to delete before each run (the keyset)")
    parser.add_argument("--stop-after-ms", type=float, default=0.0,
                        help="wait this long after READY=1 before SIGTERM (untimed)")
    parser.add_argument("--quiet", action="store_true", help="only the final line")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        fail(f"{binary} is not an executable")

    times = []
    # Short socket paths (sun_path holds 108 bytes): a temp dir under /tmp.
    with tempfile.TemporaryDirectory(prefix="jwkd-ready-", dir="/tmp") as workdir:
        # One untimed run first, so every timed run finds the binary and the
        # files in the page cache.
        for run in range(args.runs + 1):
            if args.reset and os.path.exists(args.reset):
                os.unlink(args.reset)
            ms = one_run(binary, args.config, workdir, run, args.stop_after_ms)
            if run == 0:
                continue
            times.append(ms)
            if not args.quiet:
                print(f"run {run}: {ms:.1f} ms")

    times.sort()
    median = statistics.median(times)
    p90 = times[math.ceil(0.9 * len(times)) - 1]  # nearest rank
    print(f"start_to_ready_ms median={median:.1f} p90={p90:.1f} min={times[0]:.1f}")


if __name__ == "__main__":
    main()
