"""The audit log: one record for every request the gate handles, allowed or denied.

"Handled" means the gate made a decision with an identity (authenticated or anonymous on a public path) or refused the
request (401, 403, 429, 503, and the admin API's own refusals). Requests on bypass paths, outside the protected paths,
or with the gate switched off are not the gate's, and get no record.

The parts, one module each: :mod:`.model` (the tables and how a request becomes a row), :mod:`.writer` (the
non-blocking batch writer), :mod:`.spool` (what the writer keeps while the database is down), :mod:`.store`
(the INSERT), :mod:`.retention` (pruning, one process at a time) and :mod:`.query` (filters, pages and exports).

Guarantees, in short (each module's docstring says how): a request never waits for the database and never fails
because of the audit log; nothing is lost while the database is down, and anything that cannot be kept is counted and
reported; the token secret is never recorded, and what a caller sends is stored as data, never written into a log line.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, got_request_exception, request

from ..database import GateDatabase
from ..settings import Settings
from ..state import request_path
from .model import Pending, audit_log, leases
from .retention import Pruner, PruneResult
from .spool import Spool
from .store import RowStore
from .writer import AuditWriter, flush_on_sigterm

if TYPE_CHECKING:
    from ..addresses import ClientAddress
    from ..errors import GateDenied
    from ..identity import Identity
    from ..policy import Decision
    from ..state import GateState

__all__ = ["AuditLog", "PruneResult", "audit_log", "install", "leases"]

logger = logging.getLogger("flask_jwtgate.audit")

SPOOL_DIRNAME = "jwtgate-audit-spool"
#: How often (on the gate's clock) a process asks the database whether the scheduled prune is due.
_SCHEDULE_CHECK_EVERY = 60.0


class AuditLog:
    """The audit log of one app in one process: capture, writer, retention.

    :param database: the gate's database.
    :param settings: a function returning the settings in force (they can change at run time).
    :param clock: the gate's clock, for the records' times and for retention.
    :param sync: write each record on the request thread (test mode).
    :param spool_dir: where the writer spools while the database is down.

    Reached as ``app.extensions["jwtgate"].audit``::

        audit = app.extensions["jwtgate"].audit
        audit.flush()                      # everything so far is in the database (or the spool)
        result = audit.prune()             # None if another process is pruning
    """

    def __init__(
        self,
        database: GateDatabase,
        settings: Callable[[], Settings],
        *,
        clock: Callable[[], float],
        sync: bool,
        spool_dir: str,
    ) -> None:
        s = settings()
        self.database = database
        self.settings = settings
        self.clock = clock
        self.store = RowStore(database)
        self.pruner = Pruner(database, f"{socket.gethostname()[:30]}:{id(self):x}", clock)
        # The background writer asks the scheduler at its first round. In test mode (sync) that would be the app's
        # first request, paying a prune's database round trips in line in every test that makes an app; there the
        # first check waits one check period on the gate's clock, so a test that wants the scheduled prune moves it.
        self._next_schedule_check = clock() + _SCHEDULE_CHECK_EVERY if sync else 0.0
        self._prune_thread: threading.Thread | None = None
        #: The app's after_request function (see install; init_app registers it).
        self.capture: Callable[[Response], Response] = _unset_capture
        #: The app's got_request_exception receiver (see install), kept alive here.
        self.capture_failed: Callable[..., None] | None = None
        self.writer = AuditWriter(
            self.store.insert,
            Spool(spool_dir, s.audit_spool_max_bytes),
            sync=sync,
            queue_size=s.audit_queue_size,
            batch_size=s.audit_batch_size,
            flush_interval=s.audit_flush_interval,
            on_tick=self._tick,
            times=self.store.times,
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything recorded so far (to the database, or the spool if it is down)."""
        return self.writer.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the background threads (the writer's, and a scheduled prune's)."""
        self.writer.close(timeout)
        running = self._prune_thread
        if running is not None:
            running.join(timeout)

    def prune(self) -> PruneResult | None:
        """Apply the retention settings now; ``None`` if another process (or thread) is pruning."""
        s = self.settings()
        if not self.database.tables_ready:
            self.database.create_tables()
        return self.pruner.prune(s.audit_retention_days, s.audit_max_entries, s.audit_prune_chunk_size)

    def maybe_prune(self) -> PruneResult | None:
        """The scheduler: prune if this process wins the prune that is due; cheap when none is."""
        if not self._time_to_ask():
            return None
        return self._scheduled_prune()

    def _time_to_ask(self) -> bool:
        """Whether to ask the database if a prune is due: scheduling is on, and not asked in the last minute."""
        s = self.settings()
        if s.audit_prune_interval == 0 or (s.audit_retention_days is None and s.audit_max_entries is None):
            return False
        now = self.clock()
        if now < self._next_schedule_check:
            return False
        self._next_schedule_check = now + min(_SCHEDULE_CHECK_EVERY, float(s.audit_prune_interval))
        return True

    def _tick(self) -> None:
        """After each round of the writer: the scheduler. A prune gets a thread of its own in the background mode,
        so that deleting millions of rows never holds up the writer (test mode prunes in line, deterministically)."""
        if not self._time_to_ask():
            return
        if self.writer.sync:
            self._scheduled_prune()
            return
        running = self._prune_thread
        if running is not None and running.is_alive():
            return
        thread = threading.Thread(target=self._scheduled_prune, name="jwtgate-audit-prune", daemon=True)
        thread.start()
        self._prune_thread = thread

    def _scheduled_prune(self) -> PruneResult | None:
        s = self.settings()
        try:
            if not self.database.tables_ready:
                self.database.create_tables()
            if not self.pruner.claim_scheduled(s.audit_prune_interval):
                return None
            return self.prune()
        except Exception:
            # The database is down: the writer reports it; the next check retries.
            return None

    def status(self) -> dict[str, Any]:
        return self.writer.status()

    # -- capture (the request thread) -------------------------------------------------------------------------------

    def record(
        self, status: int, values: dict[str, Any], decision: Decision | None, denied: GateDenied | None
    ) -> None:
        """Take the request's record from what the gate left on ``g`` (its ``decision``, or the ``GateDenied`` it
        ``denied`` the request with) and hand it to the writer."""
        values["_jwtgate_audited"] = True
        seen = values.get("_jwtgate_request")
        if seen is None:  # the gate's hook did not get that far: what the request itself says
            started, req = None, request._get_current_object()  # type: ignore[attr-defined]
            path = request_path(req.environ)
        else:
            started, req, path = seen
        environ = req.environ
        method = environ.get("REQUEST_METHOD", "")
        identity, client = (None, None) if decision is None else (decision.identity, decision.client)
        detail = None
        if denied is not None:
            reason = denied.reason
            detail = denied.description
            if identity is None:
                identity = denied.identity
            if denied.client is not None:
                client = denied.client
        if identity is None:
            username = token_id = provider = None
            auth_method = "anonymous"
        else:
            username, token_id, provider = identity.username, identity.token_id, identity.provider
            auth_method = identity.auth_method or "anonymous"
        if denied is None:
            if auth_method == "anonymous":
                reason = "cors_preflight" if method == "OPTIONS" and _is_preflight(environ) else "public"
            else:
                reason = "rate_limited" if status == 429 else "authenticated"
        rule = req.url_rule
        pending: Pending = (
            self.clock(),
            username,
            auth_method,
            token_id,
            provider,
            None if client is None else client.text,
            None if client is None else client.peer,
            None if client is None else client.forwarded_for,
            method,
            path,
            None if rule is None else rule.endpoint,
            status,
            "allow" if denied is None and status != 429 else "deny",
            reason,
            detail,
            None if started is None else (time.perf_counter() - started) * 1000.0,
            environ.get("HTTP_USER_AGENT"),
        )
        self.writer.submit(pending)


    def event(
        self,
        reason: str,
        detail: str,
        *,
        identity: Identity | None = None,
        client: ClientAddress | None = None,
        method: str = "-",
        path: str = "-",
        status: int = 0,
    ) -> None:
        """Record something the gate did rather than a request it decided (``decision = "system"``), such as a
        change of the run-time settings: who did it, from where, and what (``detail``, which the caller masks)."""
        self.writer.submit(
            (
                self.clock(),
                None if identity is None else identity.username,
                "-" if identity is None else identity.auth_method,
                None if identity is None else identity.token_id,
                None if identity is None else identity.provider,
                None if client is None else client.text,
                None if client is None else client.peer,
                None if client is None else client.forwarded_for,
                method,
                path,
                None,
                status,
                "system",
                reason,
                detail,
                None,
                None,
            )
        )


def _unset_capture(response: Response) -> Response:  # pragma: no cover - install replaces it before any request
    return response


def _is_preflight(environ: dict[str, Any]) -> bool:
    return bool(environ.get("HTTP_ORIGIN") and environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"))


def default_spool_dir(app: Flask, database: GateDatabase) -> str:
    """Where the writer spools when ``JWTGATE_AUDIT_SPOOL_DIR`` is unset: a folder per database in the instance
    folder, or, for a testing app, a folder of this app's own in the system's temporary directory.

    A test suite must leave the instance folder as it found it (``flask_jwtgate.database`` says why for the
    database), and one test's spool must not be replayed into another test's database. The folder is only made when
    a record has to be spooled, with a random name no other process can have taken, and mode 0700.
    """
    if app.testing:
        return os.path.join(tempfile.gettempdir(), f"{SPOOL_DIRNAME}-{secrets.token_hex(8)}", database.name)
    return os.path.join(app.instance_path, SPOOL_DIRNAME, database.name)


def install(app: Flask, state: GateState, db: Any) -> AuditLog:
    """Set up the gate's database and the audit log on ``app`` (called by ``JWTGate.init_app``)."""
    settings: Settings = state.settings
    # One GateDatabase per app, shared with the gate's other tables (API tokens): whoever comes first makes it.
    database = state.database or GateDatabase(app, db=db, uri=settings.database_uri)
    sync = settings.audit_sync if settings.audit_sync is not None else bool(app.testing)
    audit = AuditLog(
        database,
        lambda: state.settings,
        clock=state.clock,
        sync=sync,
        spool_dir=settings.audit_spool_dir or default_spool_dir(app, database),
    )
    state.database = database
    state.audit = audit
    database.start()

    def capture(response: Response) -> Response:
        values = g._get_current_object().__dict__
        if values.get("_jwtgate_audited"):
            return response
        denied, decision = values.get("_jwtgate_denied"), values.get("_jwtgate_decision")
        if denied is None and (decision is None or decision.identity is None):
            return response
        if state.settings.audit_enabled:
            try:
                audit.record(response.status_code, values, decision, denied)
            except Exception:  # the audit log never turns a response into a 500
                logger.exception("jwtgate: the audit record of a request could not be taken")
        return response

    def capture_failed(sender: Flask, exception: BaseException, **extra: Any) -> None:
        # An unhandled exception. Unless Flask propagates it (PROPAGATE_EXCEPTIONS; by default in testing and
        # debug), it answers 500 through the after_request functions, and capture records that; otherwise no
        # after_request function runs, and this is the request's last chance to be recorded.
        propagate = app.config.get("PROPAGATE_EXCEPTIONS")
        if not (propagate if propagate is not None else app.testing or app.debug):
            return
        values = g._get_current_object().__dict__
        if values.get("_jwtgate_audited"):
            return
        denied, decision = values.get("_jwtgate_denied"), values.get("_jwtgate_decision")
        if denied is None and (decision is None or decision.identity is None):
            return
        if state.settings.audit_enabled:
            try:
                audit.record(500, values, decision, denied)
            except Exception:
                logger.exception("jwtgate: the audit record of a request could not be taken")

    # init_app registers capture as an after_request function (with the rate-limit headers, when there is a limiter,
    # in one function: Flask's cost per hook is more than either's own). A signal rather than a teardown_request
    # function for the exception that escapes: it costs nothing on the requests that raise none.
    audit.capture = capture
    # Held weakly by the signal (a global), strongly by the app's audit log: it lives as long as the app does.
    audit.capture_failed = capture_failed
    got_request_exception.connect(capture_failed, app)
    if app.testing and not sync:

        def flush_in_tests(exc: BaseException | None) -> None:
            audit.flush()

        app.teardown_appcontext(flush_in_tests)
    if not sync:
        flush_on_sigterm()
    return audit

