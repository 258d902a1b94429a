"""Real servers for the tests that need several processes or a service to switch off: gunicorn running the example
app, nginx in front of it, a ``redis-server`` of the test's own, and a TCP proxy that can cut a database off.

Each runs as a child of the test on a free port of 127.0.0.1, with its files in a folder the test gives it: nothing
here touches a server that others share (the system nginx, the shared Redis and PostgreSQL are never stopped).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import free_port, service_missing

ROOT = Path(__file__).resolve().parent.parent
_GUNICORN_VERSION = tuple(int(part) for part in version("gunicorn").split(".")[:2] if part.isdigit())
#: A request header the access log records (``Gunicorn.served_by``): which worker served the request that carried it.
PROBE_HEADER = "X-Test-Probe"


def _wait_until(ready: Callable[[], bool], alive: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``ready`` until it is true (a bounded wait for a process to start listening, never a rate window)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive():
            pytest.fail(f"{what} exited", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not start within {timeout}s", pytrace=False)
        time.sleep(0.05)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (read from /proc: gunicorn's workers are the master's children)."""
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


class Gunicorn:
    """``gunicorn -w N 'example_app:create_app()'`` as a subprocess, with its logs in files.

    :param max_requests: replace each worker after this many requests (so that a run is served by several processes
        whichever worker the kernel hands each connection to); ``None`` keeps the workers.
    :param preload: ``--preload``: the app is made in the master and forked into the workers.
    :param graceful_timeout: seconds the workers get to finish their requests on SIGTERM.
    :param worker_class: gunicorn's ``--worker-class``; ``"gthread"`` runs ``threads`` threads in each worker.

    The access log has one line per request: the worker's pid, the status and the request's ``X-Test-Probe`` header
    (``-`` without one), so a test can tell which worker served which request (:meth:`served_by`).
    """

    def __init__(
        self,
        folder: Path,
        environment: dict[str, str],
        *,
        workers: int = 3,
        max_requests: int | None = None,
        preload: bool = False,
        graceful_timeout: float = 5,
        worker_class: str = "sync",
        threads: int = 4,
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.error_log = folder / "gunicorn-error.log"
        self.access_log = folder / "gunicorn-access.log"
        command = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(workers),
            "--bind", f"127.0.0.1:{self.port}",
            "--graceful-timeout", str(graceful_timeout),
            *(["--max-requests", str(max_requests)] if max_requests else []),
            *(["--preload"] if preload else []),
            "--worker-class", worker_class,
            # gunicorn 27 listens on a control socket, by default at one path in the home folder for every server.
            *(["--control-socket", str(folder / "gunicorn.ctl")] if _GUNICORN_VERSION >= (27,) else []),
            *(["--threads", str(threads)] if worker_class == "gthread" else []),
            "--error-logfile", str(self.error_log),
            "--access-logfile", str(self.access_log),
            "--access-logformat", f"%(p)s %(s)s %({{{PROBE_HEADER.lower()}}}i)s",
            "example_app:create_app()",
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **environment}
        self.output = folder / "gunicorn-output.log"
        with self.output.open("wb") as output:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return "\n".join(path.read_text() for path in (self.error_log, self.output) if path.exists())

    def wait_until_serving(self, timeout: float = 30, booted: int | None = None) -> None:
        """Until ``booted`` workers (default: ``workers``) have booted in all, and the port answers (a bounded wait
        for the server, not a rate window)."""
        deadline = time.monotonic() + timeout
        booted = self.workers if booted is None else booted
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.logs()}", pytrace=False)
            if self.logs().count("Booting worker") >= booted and _listening(self.port):
                return
            time.sleep(0.1)
        pytest.fail(f"gunicorn did not start serving within {timeout}s:\n{self.logs()}", pytrace=False)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (gunicorn's graceful stop), then SIGKILL if it takes longer than ``timeout``; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            return self.process.returncode

    def send_signal(self, number: signal.Signals) -> None:
        """Signal the master (SIGHUP: new workers replace the old ones gracefully)."""
        self.process.send_signal(number)

    def worker_pids(self) -> set[str]:
        """Every pid that served a request so far, from the access log."""
        return {line.split()[0] for line in self.access_log.read_text().splitlines() if line.strip()}

    def workers_now(self) -> set[int]:
        """The pids of the master's worker processes at this moment."""
        return _children(self.process.pid)

    def served_by(self, probes: Collection[str], timeout: float = 10) -> dict[str, int]:
        """``probe -> pid`` of the worker that served the request carrying each ``X-Test-Probe`` value. A worker
        writes its access-log line after the response, so this waits (bounded) until every probe's line is there."""
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, int] = {}
            for line in self.access_log.read_text().splitlines():
                fields = line.split()
                if len(fields) == 3 and fields[2] in probes:
                    found[fields[2]] = int(fields[0].strip("<>"))  # gunicorn writes the pid as <pid>
            if len(found) == len(probes) or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


class Nginx:
    """nginx as the reverse proxy in front of ``upstream`` (a port on 127.0.0.1): a non-daemon child of the test with
    a configuration, logs and temporary files of its own in ``folder``, listening on a free port of 127.0.0.1.

    It sets ``X-Forwarded-For`` as production configurations do (``$proxy_add_x_forwarded_for``: what the client
    sent, then the address nginx saw), and adds ``X-Upstream-Server`` to every answer, the upstream's ``Server``
    header: empty when nginx answered by itself (a request it refused, or an upstream it could not reach).
    """

    def __init__(self, folder: Path, upstream: int, binary: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.error_log = folder / "error.log"
        self.config = folder / "nginx.conf"
        for temporary in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (folder / temporary).mkdir(exist_ok=True)
        # Running as root, nginx would hand its workers to "nobody", who cannot enter a test's private folder.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            f"""{user}worker_processes 1;
error_log {self.error_log} info;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream app {{ server 127.0.0.1:{upstream}; }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://app;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            add_header X-Upstream-Server $upstream_http_server always;
        }}
    }}
}}
"""
        )
        command = [
            binary, "-c", str(self.config), "-p", str(folder), "-e", str(self.error_log),
            "-g", f"daemon off; pid {folder}/nginx.pid;",
        ]
        self.output = folder / "output.log"
        with self.output.open("wb") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        _wait_until(lambda: _listening(self.port), lambda: self.process.poll() is None, 15, f"nginx ({self.logs()})")

    def logs(self) -> str:
        return "\n".join(path.read_text() for path in (self.error_log, self.output) if path.exists())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish the requests under way
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def nginx_binary() -> str:
    """Debian's nginx (``/usr/sbin`` is not on every user's PATH), or skip (fail under JWTGATE_REQUIRE_SERVICES=1)."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        service_missing("nginx", "the nginx binary is not installed (apt-get install nginx)")
    return str(binary)


class Proxy:
    """A TCP proxy (to PostgreSQL by default) that can be cut (connections reset, new ones refused) and restored, or
    stalled (connections accepted and kept, nothing forwarded either way: a server that hangs) and resumed.

    The app is pointed at the proxy's port; the server behind it is never stopped, as others share it.
    """

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self.port = free_port()
        self.flowing = threading.Event()
        self.flowing.set()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self.open = False
        self.restore()

    def restore(self) -> None:
        self.open = True
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                if not self.open:  # accepted in the instant of the cut
                    client.close()
                    upstream.close()
                    return
                self.sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, destination: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                destination.sendall(data)
        except OSError:
            pass
        for end in (source, destination):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        assert self.listener is not None
        with self.lock:
            self.open = False
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way (close alone does not)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            doomed, self.sockets = self.sockets, set()
        for end in doomed:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.resume()
        if self.open:
            self.cut()
