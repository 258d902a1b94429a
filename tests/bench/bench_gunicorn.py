"""Throughput under a real server: gunicorn with 2 sync workers, loaded by wrk, bare Flask against the gate with every
feature on and its rate limits in Redis, in one run.

Columns (each its own gunicorn, all started up front and measured in turn, round after round, in a rotating order so
that machine noise hits every column alike):

- ``bare flask``: the example app's routes without the gate (``bench_gate.bare_app``);
- ``jwtgate, all features, redis``: the example app with groups (``JWTGATE_ALLOWED_GROUPS`` and the demo directory's
  groups loader), read-only groups, an IP allowlist with ``X-Forwarded-For`` believed from a trusted proxy (wrk's
  requests come from 127.0.0.1 and name a client in 192.0.2.0/24), a per-token rate limit every request passes,
  counted in Redis, and the audit log (SQLite in the instance folder);
- ``jwtgate, all features, memory``: the same with ``memory://`` rate limits, to show what Redis adds (each worker
  counts alone there: not for production with several workers).

Every request is ``GET /rest/api/2/myself`` with the same valid token (the gate's verified-token cache at work). The
Redis is one of the benchmark's own (a ``redis-server`` on a free port, so that its command counts are this run's), or
``--redis-url``. The run ends with the medians and spreads of requests per second, the median over rounds of each
column's ratio to bare Flask in the same round, and Redis's count of script calls (``EVALSHA``) per request served,
which is the round trips per request. It also reports the CPU time each column's processes used per request
(gunicorn's master and workers, plus redis-server for the Redis column), which moves less than requests per second
when other work shares the machine, and the ceiling the Redis round trip alone sets: the CPU the Redis column uses
over the memory column (the worker's socket calls and wakeups, and redis-server's work), added to bare Flask's.

Run: ``python tests/bench/bench_gunicorn.py [--rounds 7] [--duration 10] [--connections 4] [--workers 2]
[--redis-socket]`` (``--redis-socket``: its Redis on a Unix socket, as a Redis on the same host would be; needs
``wrk``; Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from flask import Flask

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_gate import CLIENT, all_features  # noqa: E402  # the same settings and client as its in-process columns

PATH = "/rest/api/2/myself"


# -- the apps, as gunicorn imports them ----------------------------------------------------------------------------


def bare() -> Flask:
    """``bench_gunicorn:bare()``: the example app's routes, no gate."""
    from bench_gate import bare_app

    return bare_app()


def gated() -> Flask:
    """``bench_gunicorn:gated()``: the example app with the settings in ``JWTGATE_BENCH_CONFIG`` (JSON)."""
    from example_app import create_app

    return create_app(json.loads(os.environ["JWTGATE_BENCH_CONFIG"]))


# -- servers ----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}" + (f":\n{log.read_text()}" if log else ""))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


class Server:
    """``gunicorn --workers N`` (sync workers) serving ``app`` (``module:factory()`` in this folder)."""

    def __init__(self, name: str, app: str, folder: Path, environment: dict[str, str], workers: int = 2) -> None:
        self.name = name
        self.port = free_port()
        self.log = folder / f"gunicorn-{self.port}.log"
        command = [
            sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "sync",
            "--bind", f"127.0.0.1:{self.port}", "--chdir", str(HERE), "--error-logfile", str(self.log), app,
        ]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}", **environment}
        # From this tree's root: ``python -m`` puts the directory it starts in first on sys.path.
        self.process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait(self) -> None:
        wait_for_port(self.port, self.process, f"gunicorn ({self.name})", self.log)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes ``pids`` have used so far (Linux ``/proc``)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wrk_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load(port: int, token: str, duration: float, connections: int) -> tuple[float, int]:
    """wrk against ``port`` for ``duration`` seconds: (requests per second, requests)."""
    run = subprocess.run(
        ["wrk", "--threads", "1", "--connections", str(connections), "--duration", f"{duration:g}s", "--timeout", "10s",
         "--header", f"Authorization: Bearer {token}", "--header", f"X-Forwarded-For: {CLIENT}",
         f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True,
    )
    output = run.stdout + run.stderr
    if run.returncode != 0 or "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"the benchmark's requests failed:\n{output}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rate is None or total is None:
        raise SystemExit(f"cannot read wrk's output:\n{output}")
    return float(rate.group(1)), int(total.group(1))


def start_redis(folder: Path, unix_socket: bool = False) -> tuple[str, subprocess.Popen[bytes]]:
    """A redis-server of the benchmark's own, on a free TCP port or (``unix_socket``) on a Unix socket only."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no redis-server on PATH: pass --redis-url")
    port = free_port()
    socket_path = folder / "redis.sock"
    listen = ["--port", "0", "--unixsocket", str(socket_path)] if unix_socket else ["--port", str(port)]
    process = subprocess.Popen(
        [binary, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    if not unix_socket:
        wait_for_port(port, process, "redis-server")
        return f"redis://127.0.0.1:{port}/0", process
    deadline = time.monotonic() + 60
    while not socket_path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not socket_path.exists():
        raise SystemExit("redis-server did not start")
    return f"redis+unix://{socket_path}", process


def script_calls(redis_url: str) -> int:
    import redis

    # limits' scheme for a Unix socket is redis+unix://, redis-py's unix://
    stats = redis.Redis.from_url(redis_url.replace("redis+unix://", "unix://", 1)).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per column and round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers per column")
    parser.add_argument("--redis-url", help="an existing Redis (default: a redis-server of the benchmark's own)")
    parser.add_argument("--redis-socket", action="store_true",
                        help="the benchmark's own redis-server on a Unix socket rather than TCP (a Redis on the host)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install wrk)")

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        redis_process = None
        redis_url = args.redis_url
        if redis_url is None:
            redis_url, redis_process = start_redis(folder, args.redis_socket)
        prefix = f"jwtgate-bench-{uuid.uuid4().hex}"
        from example_app import create_app
        from example_app.idp import mint_token

        instance = folder / "instance"
        token = mint_token(create_app(instance_path=str(instance)), "bob")  # makes the demo IdP's keys first
        base = {"JWTGATE_EXAMPLE_INSTANCE_PATH": str(instance)}
        servers = [
            Server("bare flask", "bench_gunicorn:bare()", folder, {}, args.workers),
            Server("jwtgate, all features, redis", "bench_gunicorn:gated()", folder,
                   {**base, "JWTGATE_BENCH_CONFIG": json.dumps(all_features(redis_url, prefix))}, args.workers),
            Server("jwtgate, all features, memory", "bench_gunicorn:gated()", folder,
                   {**base, "JWTGATE_BENCH_CONFIG": json.dumps(all_features("memory://", prefix))}, args.workers),
        ]
        rates: dict[str, list[float]] = {server.name: [] for server in servers}
        #: CPU seconds per request: the server's processes (and for the Redis column, redis-server's), and wrk's.
        cpu: dict[str, list[float]] = {server.name: [] for server in servers}
        redis_cpu: list[float] = []  # redis-server's share of the Redis column's
        wrk: list[float] = []
        try:
            for server in servers:
                server.wait()
                load(server.port, token, 2, args.connections)  # warm up: imports, caches, connections, the script
            redis_name = servers[1].name
            calls_before, served = script_calls(redis_url), 0
            for round_number in range(args.rounds):
                shift = round_number % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    pids = [server.process.pid, *children(server.process.pid)]
                    redis_pids = [redis_process.pid] if server.name == redis_name and redis_process else []
                    used, redis_used, client_used = cpu_seconds(pids), cpu_seconds(redis_pids), wrk_cpu()
                    rate, total = load(server.port, token, args.duration, args.connections)
                    redis_share = cpu_seconds(redis_pids) - redis_used
                    cpu[server.name].append((cpu_seconds(pids) - used + redis_share) / total)
                    if redis_pids:
                        redis_cpu.append(redis_share / total)
                    wrk.append((wrk_cpu() - client_used) / total)
                    rates[server.name].append(rate)
                    if server.name == redis_name:
                        served += total
                print(f"round {round_number + 1}: " + ", ".join(f"{n}: {v[-1]:.0f}" for n, v in rates.items()),
                      flush=True)
            calls = script_calls(redis_url) - calls_before
        finally:
            for server in servers:
                server.stop()
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait(timeout=10)

    bare_rates = rates["bare flask"]
    print(f"\ngunicorn, {args.workers} sync workers; wrk, 1 thread, {args.connections} connections, "
          f"{args.duration:g} s per column and round, {args.rounds} rounds")
    print(f"  {'column':<32}{'median req/s':>14}{'min–max':>16}{'× bare (median)':>17}{'min–max':>14}")
    for name, values in rates.items():
        ratios = [value / b for value, b in zip(values, bare_rates, strict=True)]
        print(f"  {name:<32}{statistics.median(values):>14.0f}{f'{min(values):.0f}–{max(values):.0f}':>16}"
              f"{statistics.median(ratios):>17.2f}{f'{min(ratios):.2f}–{max(ratios):.2f}':>14}")
    print(f"\nRedis script calls (EVALSHA) per request of '{redis_name}': {calls / served:.3f} "
          f"({calls} calls, {served} requests)")
    client = statistics.median(wrk)
    print(f"\nCPU per request (median over rounds), less sensitive than req/s to what else runs on the machine; wrk "
          f"used {client * 1e6:.0f} µs a request. 'Estimated' is the throughput ratio if the machine's CPUs were "
          "the only limit: (bare + wrk) / (column + wrk).")
    bare_cpu = statistics.median(cpu["bare flask"])
    print(f"  {'column':<32}{'CPU µs/request':>16}{'estimated × bare':>18}")
    for name, values in cpu.items():
        used = statistics.median(values)
        print(f"  {name:<32}{used * 1e6:>16.0f}{(bare_cpu + client) / (used + client):>18.2f}")
    if redis_cpu:
        print(f"  (of the Redis column's, redis-server's: {statistics.median(redis_cpu) * 1e6:.0f} µs a request)")
        # The same features but for the counting: what the Redis round trip itself costs the machine (the worker's
        # socket calls and their wakeups, and redis-server's work) over counting in memory.
        trip = statistics.median(cpu[redis_name]) - statistics.median(cpu["jwtgate, all features, memory"])
        print(f"  the Redis round trip: {trip * 1e6:.0f} µs of CPU a request over memory counting; with it alone on "
              f"top of bare Flask (a gate that cost nothing else), the estimate would be "
              f"{(bare_cpu + client) / (bare_cpu + trip + client):.2f} × bare (issue 12's target for the Redis "
              "column: 0.80)")


if __name__ == "__main__":
    main()
