"""Redis servers of a test's own: a plain ``redis-server``, a one-node Redis Cluster, a Sentinel watching a server,
and a "Redis" that accepts connections and never answers. The shared Redis (``redis_url``) is never stopped or
reconfigured; these run on free ports in the test's temporary folder and are stopped afterwards.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import free_port, service_missing


def redis_binary() -> str:
    """The ``redis-server`` binary, or skip (fail under JWTGATE_REQUIRE_SERVICES=1)."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server", "the redis-server binary is not on PATH")
    try:
        import redis  # noqa: F401
    except ImportError:
        service_missing("Redis", "the 'redis' package is not installed")
    return str(binary)


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    """Until ``ready()`` (a bounded wait for a process to serve, not a rate window)."""
    deadline = time.monotonic() + 10
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start", pytrace=False)
        time.sleep(0.05)


class RedisServer:
    """A ``redis-server`` process of the test's own, which the test may stop and start again.

    :param options: more ``redis-server`` arguments (``--cluster-enabled yes``, ...).
    """

    def __init__(self, binary: str, directory: Path, *options: str) -> None:
        self.binary = binary
        self.directory = directory
        self.options = options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=5)

    def start(self) -> None:
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), *self.options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            _wait_until(answers, self.process, f"redis-server on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def running(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A plain Redis of the test's own."""
    with running(RedisServer(redis_binary(), tmp_path / "redis")) as server:
        yield server


class Topology(NamedTuple):
    """A storage URI, and the server that holds the keys (for ``sent_commands``). Module-scoped: each test uses a
    key prefix of its own."""

    uri: str
    server: RedisServer


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """A one-node Redis Cluster that holds every slot, as ``redis+cluster://``. One node is enough for the rule that
    matters to the gate: a command or script may only touch keys of one hash slot (CROSSSLOT), which Redis checks per
    slot, not per node."""
    # The cluster bus port is its own free port: Redis's default, the port + 10000, may be taken or beyond 65535.
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("cluster"), "--cluster-enabled", "yes",
                         "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()))
    with running(server):
        client = server.client()
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        assert server.process is not None
        _wait_until(lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"), server.process,
                    "the one-node cluster")
        yield Topology(f"redis+cluster://127.0.0.1:{server.port}", server)


@pytest.fixture(scope="module")
def redis_unix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """A Redis listening on a Unix socket too, as ``redis+unix://``."""
    folder = tmp_path_factory.mktemp("unix")
    server = RedisServer(redis_binary(), folder, "--unixsocket", str(folder / "redis.sock"))
    with running(server):
        yield Topology(f"redis+unix://{folder / 'redis.sock'}", server)


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """A Sentinel watching a Redis of the test's own as service ``jwtgate``, as ``redis+sentinel://``."""
    binary = redis_binary()
    folder = tmp_path_factory.mktemp("sentinel")
    with running(RedisServer(binary, folder / "master")) as master:
        port = free_port()
        config = folder / "sentinel.conf"  # Sentinel rewrites its configuration file: one of the test's own
        config.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor jwtgate 127.0.0.1 {master.port} 1\n")
        process = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            import redis

            sentinel = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)

            def knows_master() -> bool:
                try:
                    return sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "jwtgate") is not None
                except redis.RedisError:
                    return False

            _wait_until(knows_master, process, f"redis sentinel on port {port}")
            yield Topology(f"redis+sentinel://127.0.0.1:{port}/jwtgate", master)
        finally:
            process.terminate()
            process.wait(timeout=10)


class SilentRedis:
    """A "Redis" that accepts connections and never answers: what a hung server looks like to a client. It counts
    the connections it accepts (redis-py opens a new one for each attempt after a timeout)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.05)  # accept() does not wake when another thread closes the socket: poll
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.connections: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self.connections.append(connection)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self.listener.close()  # also resets connections it has not accepted: nothing stays blocked on it
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_redis() -> Iterator[SilentRedis]:
    try:
        import redis  # noqa: F401
    except ImportError:
        service_missing("Redis", "the 'redis' package is not installed")
    server = SilentRedis()
    try:
        yield server
    finally:
        server.close()


class Sent(NamedTuple):
    """A command a client sent: its name, and the client's address and port."""

    command: str
    client: str


@contextmanager
def sent_commands(server: RedisServer) -> Iterator[list[Sent]]:
    """The commands clients send to ``server`` inside the block, in order (a script's own commands left out)."""
    commands: list[Sent] = []
    monitor_client, marker_client, marker = server.client(), server.client(), f"end-{uuid.uuid4().hex}"
    marker_client.ping()  # connected (and its handshake done) before the monitor starts
    with monitor_client.monitor() as monitor:
        yield commands
        marker_client.echo(marker)
        while True:
            command: dict[str, Any] = monitor.next_command()
            if marker in command["command"]:
                break
            if command["client_type"] != "lua":
                client = f"{command['client_address']}:{command['client_port']}"
                commands.append(Sent(command["command"].split()[0].upper(), client))
