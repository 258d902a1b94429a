"""A real deployment on 127.0.0.1, as docs/deployment.md describes one, and a client that talks to it through nginx.

::

    client ──(from 127.0.0.2 or 127.0.0.3)──> nginx ──X-Forwarded-For──> gunicorn, 3 workers, example app
                                                                            ├── Redis (a redis-server of its own)
                                                                            ├── PostgreSQL (a schema of its own, through
                                                                            │   a TCP proxy the test can cut)
                                                                            └── identity provider (the mock: JWKS and
                                                                                introspection, switchable down)

The gate trusts nginx (``127.0.0.1/32``) for ``X-Forwarded-For`` and allows only ``127.0.0.2``: the tests' clients bind
their sockets to 127.0.0.2 (allowed) or 127.0.0.3 (refused), both loopback addresses on Linux, so the allowlist is
checked against the address nginx really saw. Tokens come from the mock identity provider (JWTs by its JWKS, opaque
tokens by its introspection endpoint), the demo directory (personal access tokens, Basic) and the gate itself.

Every token's rate limit is high (10,000 a minute) except for members of the group ``limited`` (20 a minute), so the
tests do not run into each other's limits, and the failed-authentication limit is out of the way of the fuzz test.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import postgres_schema, require_postgres
from redis_servers import RedisServer, redis_binary
from servers import PROBE_HEADER, Gunicorn, Nginx, Proxy, nginx_binary

from flask_jwtgate.audit.model import audit_log
from flask_jwtgate.revisions import DEADLINE
from flask_jwtgate.testing_idp import MockIdentityProvider

#: The client address the allowlist admits, and one it refuses (both loopback: see the module's docstring).
ALLOWED = "127.0.0.2"
REFUSED = "127.0.0.3"
WORKERS = 3
#: A group whose members get a small rate limit, for the test that counts it.
LIMITED_GROUP = "limited"
LIMITED_RATE = 20
API = "/rest/api/2"
#: Within this many seconds every worker applies a settings change or a revocation (the contract).
PROPAGATION_DEADLINE = DEADLINE


@dataclass
class Reply:
    """One HTTP answer as the client got it through nginx."""

    status: int
    headers: dict[str, str]
    body: bytes
    probe: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def from_app(self) -> bool:
        """Whether gunicorn answered (nginx passed the request on and got a response), rather than nginx alone."""
        return self.headers.get("x-upstream-server", "").startswith("gunicorn")

    @property
    def reason(self) -> str | None:
        """The gate's ``reason`` in a refusal, else ``None``."""
        try:
            body = self.json
        except ValueError:
            return None
        return body.get("reason") if isinstance(body, dict) else None

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


@dataclass
class Stack:
    """nginx, gunicorn with the example app, Redis, PostgreSQL (through a cuttable proxy) and the identity provider.

    :param folder: where every process keeps its files.
    :param settings: more ``FLASK_JWTGATE_*`` settings (without the prefix), as JSON or strings.
    :param worker_class: gunicorn's worker class (``"sync"``, or ``"gthread"`` with 4 threads per worker).
    """

    folder: Path
    settings: Mapping[str, Any] = field(default_factory=dict)
    worker_class: str = "sync"

    def __post_init__(self) -> None:
        self._cleanup = ExitStack()
        try:
            self._start()
        except BaseException:
            self._cleanup.close()
            raise

    def _start(self) -> None:
        nginx = nginx_binary()
        redis_server = redis_binary()
        postgres = require_postgres()
        self.idp = self._cleanup.enter_context(MockIdentityProvider())
        self.redis = RedisServer(redis_server, self.folder / "redis")
        self.redis.start()
        self._cleanup.callback(self.redis.stop)
        #: The gate's tables, in a schema of their own; the tests read them here, directly.
        self.database_url = self._cleanup.enter_context(postgres_schema(postgres))
        self.database = sa.create_engine(self.database_url)
        self._cleanup.callback(self.database.dispose)
        url = sa.engine.make_url(self.database_url)
        #: The app reaches PostgreSQL only through this proxy, which a test may cut.
        self.proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
        self._cleanup.callback(self.proxy.close)
        # The URL as docs/deployment.md writes it: no timeouts of its own, the gate's defaults apply.
        via_proxy = url.set(host="127.0.0.1", port=self.proxy.port)
        providers = [
            # A JWKS provider, with a short cooldown so that keys are fetched again soon after the provider is back.
            self.idp.jwks_provider("idp", directory_users=True, jwks_cooldown=1),
            # Its introspection endpoint, for opaque tokens (without an issuer: one issuer names one provider).
            self.idp.introspection_provider("idp-introspection", issuer=None, directory_users=True),
        ]
        environment = {
            "JWTGATE_EXAMPLE_INSTANCE_PATH": str(self.folder / "instance"),
            "FLASK_JWTGATE_PROVIDERS": json.dumps(providers),
            "FLASK_JWTGATE_DATABASE_URI": via_proxy.render_as_string(hide_password=False),
            "FLASK_JWTGATE_AUDIT_FLUSH_INTERVAL": "0.2",
            "FLASK_JWTGATE_RATE_LIMIT": "10000/minute",
            "FLASK_JWTGATE_RATE_LIMIT_GROUPS": json.dumps({LIMITED_GROUP: f"{LIMITED_RATE}/minute"}),
            "FLASK_JWTGATE_RATE_LIMIT_STORAGE_URI": self.redis.url,
            "FLASK_JWTGATE_AUTH_FAILURE_LIMIT": "100000/minute",
            "FLASK_JWTGATE_IP_ALLOWLIST": json.dumps([f"{ALLOWED}/32"]),
            "FLASK_JWTGATE_PROXY_HEADER": "X-Forwarded-For",
            "FLASK_JWTGATE_TRUSTED_PROXIES": json.dumps(["127.0.0.1/32"]),
            **{
                f"FLASK_JWTGATE_{key}": value if isinstance(value, str) else json.dumps(value)
                for key, value in self.settings.items()
            },
        }
        self.app = Gunicorn(
            self.folder, environment, workers=WORKERS, graceful_timeout=10, worker_class=self.worker_class
        )
        self._cleanup.callback(self.app.stop)
        self.app.wait_until_serving(timeout=60)
        self.nginx = Nginx(self.folder / "nginx", self.app.port, nginx)
        self._cleanup.callback(self.nginx.stop)

    def close(self) -> None:
        self._cleanup.close()

    def logs(self) -> str:
        """gunicorn's and nginx's logs, for a failing assertion's message."""
        return f"--- gunicorn\n{self.app.logs()[-6000:]}\n--- nginx\n{self.nginx.logs()[-3000:]}"

    # -- the client -------------------------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        source: str = ALLOWED,
        agent: str | None = None,
        probe: str | None = None,
        timeout: float = 30,
    ) -> Reply:
        """One request through nginx, from the client address ``source``, on a connection of its own.

        :param body: sent as JSON (a ``bytes`` body is sent as it is).
        :param agent: the User-Agent, which the audit log records: a test finds its own rows by it.
        :param probe: the ``X-Test-Probe`` header, by which :meth:`every_worker` tells which worker answered.
        :param timeout: seconds to wait for the answer (:class:`TimeoutError` after that).
        """
        sent = {"User-Agent": agent or "e2e"}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if basic is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
        if probe is not None:
            sent[PROBE_HEADER] = probe
        payload: bytes | None = None
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.nginx.port, timeout=timeout, source_address=(source, 0)
        )
        try:
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            return Reply(
                response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(), probe
            )
        finally:
            connection.close()

    def every_worker(self, send: Callable[[str], Reply], rounds: int = 40, parallel: int = 6) -> dict[int, list[Reply]]:
        """Call ``send(probe)`` until every worker of gunicorn has answered at least once; the replies by worker.

        Which worker takes a connection is up to the kernel, so requests go in parallel rounds (a busy worker leaves
        the next connection to another) until the access log shows each worker's pid.
        """
        workers = self.app.workers_now()
        assert len(workers) == WORKERS, (workers, self.logs())
        seen: dict[int, list[Reply]] = {}
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for _ in range(rounds):
                probes = [uuid.uuid4().hex for _ in range(parallel)]
                replies = list(pool.map(send, probes))
                served = self.app.served_by(probes)
                assert len(served) == len(probes), ("requests that gunicorn did not log", replies, self.logs())
                for reply in replies:
                    assert reply.probe is not None, "send(probe) must pass the probe on to call()"
                    seen.setdefault(served[reply.probe], []).append(reply)
                if workers <= seen.keys():
                    return seen
        pytest.fail(f"only workers {sorted(seen)} of {sorted(workers)} answered in {rounds} rounds", pytrace=False)

    # -- what the gate stored ----------------------------------------------------------------------------------------

    def audit_rows(self, agent: str) -> list[dict[str, Any]]:
        """The audit records of the requests that carried the User-Agent ``agent``, oldest first."""
        query = sa.select(audit_log).where(audit_log.c.user_agent == agent).order_by(audit_log.c.id)
        try:
            with self.database.connect() as connection:
                return [dict(row._mapping) for row in connection.execute(query)]
        except sa.exc.ProgrammingError:  # the workers have not made the table yet
            return []

    def wait_for_rows(self, agent: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """The audit records of ``agent`` once there are ``count`` of them (the writers flush every 0.2 s, and replay
        a spool with a pause that grows to 10 s); fails if there are more, or too few in time."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.audit_rows(agent)
            if len(rows) >= count or time.monotonic() > deadline:
                assert len(rows) == count, (f"{len(rows)} audit records for {count} responses", self.logs())
                return rows
            time.sleep(0.1)


def agent_name(what: str) -> str:
    """A User-Agent of the test's own, to find its audit records."""
    return f"e2e-{what}-{uuid.uuid4().hex[:12]}"


def stack_fixture(folder: Path, worker_class: str = "sync", **settings: Any) -> Iterator[Stack]:
    stack = Stack(folder, settings, worker_class)
    try:
        yield stack
    finally:
        stack.close()
