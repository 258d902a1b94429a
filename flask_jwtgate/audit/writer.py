"""The audit writer: requests hand over a record and go on; a background thread writes them in batches.

Guarantees:

- **Never blocking a request.** The request thread appends a small tuple to a bounded in-memory queue (a ``deque``
  append, no lock, no I/O) and wakes the writer only when a batch is full. Turning it into a row (cleaning and cutting
  the caller's text), talking to the database and any retrying all happen on the writer thread.
- **Nothing lost.** A batch the database refuses because it is down or unreachable goes to the local spool
  (:mod:`.spool`) and is replayed, before anything else, once the database answers again; a batch whose ``COMMIT``
  reached the database but whose answer was lost is skipped on replay by its unique request ids, so it is not doubled.
  When the queue is full the request thread spools the record itself. The queue is drained at shutdown: at interpreter
  exit (``atexit``; gunicorn workers leave by ``sys.exit`` on SIGTERM and SIGQUIT, so it runs there), on SIGTERM in a
  process that left SIGTERM at its default (the dev server, a script), and on app-context teardown in tests.
  What can still be lost is said plainly: a SIGKILL or a power cut loses the queue (at most one
  ``JWTGATE_AUDIT_FLUSH_INTERVAL`` or ``JWTGATE_AUDIT_BATCH_SIZE`` of records).
- **Anything dropped is counted and reported**: only when neither the database nor the spool can take a record (the
  spool's size limit, a full disk), or a row that the database refuses as malformed. The writer logs a warning with the
  count (never the record: it holds the caller's text), keeps the count in :meth:`AuditWriter.status`
  (``GET /admin/audit/status``, ``flask jwtgate audit status``), and once the database is back writes a row of its own,
  ``reason = "audit_records_dropped"``, so that the gap shows in the audit log itself.
- **Fork-safe.** The thread starts on the first record in each process, not at import or in ``init_app``; after a
  fork the child forgets the parent's queue (the parent writes those records), thread, locks and spool file, and draws
  new request ids.
"""

from __future__ import annotations

import atexit
import collections
import datetime as dt
import logging
import os
import secrets
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from itertools import count
from typing import Any

import sqlalchemy as sa

from .model import AuditRow, Pending, to_rows, utc_datetimes
from .spool import Rows, Spool
from .store import is_unavailable

logger = logging.getLogger("flask_jwtgate.audit")

_MAX_BACKOFF = 10.0
_SPOOL_CHECK_EVERY = 5.0
_WARN_EVERY = 60.0


class RequestIds:
    """Unique request ids, cheaply: a random per-process prefix and a counter (new prefix after a fork).

    The counter is written with a fixed width, so that one process's ids sort in the order they were drawn and the
    unique index on them grows at one edge instead of splitting pages all over.

    ::

        request_ids.next()    # '3f9c0a7d2b1e4c55-00000000001a'
        request_ids.take(2)   # ['3f9c0a7d2b1e4c55-00000000001b', '3f9c0a7d2b1e4c55-00000000001c']
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prefix = f"{secrets.token_hex(8)}-"
        self._counter = count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"

    def take(self, number: int) -> list[str]:
        prefix, counter = self._prefix, self._counter
        return [f"{prefix}{next(counter):012x}" for _ in range(number)]


request_ids = RequestIds()


class AuditWriter:
    """Queue, batch and write audit records for one app in one process.

    :param insert: writes a batch of rows in one transaction, raising the database's error.
    :param spool: where batches go while the database cannot take them.
    :param sync: write each record at once on the request thread (test mode).
    :param queue_size: records held in memory before the request thread spools them itself.
    :param batch_size: records per INSERT; a full batch wakes the writer.
    :param flush_interval: seconds a record may wait before its batch is written.
    :param on_tick: called on the writer thread after each round (retention's scheduler).
    :param times: turns the records' times (seconds) into the form the store takes (:meth:`.store.RowStore.times`).

    ::

        writer = AuditWriter(store.insert, Spool(directory, 256 << 20), sync=False)
        writer.submit(pending)     # on the request thread: never blocks
        writer.flush(timeout=5)    # everything submitted so far is in the database or the spool
    """

    def __init__(
        self,
        insert: Callable[[Sequence[AuditRow]], None],
        spool: Spool,
        *,
        sync: bool = False,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        on_tick: Callable[[], object] | None = None,
        times: Callable[[Sequence[float]], Iterable[Any]] = utc_datetimes,
    ) -> None:
        self.insert = insert
        self.times = times
        self.spool = spool
        self.sync = sync
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_tick = on_tick
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self._unreported_drops = 0
        self._last_warning = 0.0
        self._failures = 0
        self._retry_at = 0.0
        self._next_spool_check = 0.0
        self._spool_dirty = True  # files of an earlier run may be waiting
        self.last_error: str | None = None
        self._reset()
        _writers.add(self)

    def _reset(self) -> None:
        self._queue: collections.deque[Pending] = collections.deque()
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def reset_after_fork(self) -> None:
        self._reset()
        self.spool.reset_after_fork()
        self.written = self.spooled = self.replayed = self.dropped = self._unreported_drops = 0

    # -- the request thread -----------------------------------------------------------------------------------------

    def submit(self, pending: Pending) -> None:
        """Hand over one record. Never raises, never waits on the database."""
        if self.sync:
            self._write_now(pending)
            return
        if self._thread is None and not self._start():
            self._overflow(pending)  # no thread to be had (e.g. at interpreter exit): keep it in the spool
            return
        queue = self._queue
        if len(queue) >= self.queue_size:
            self._overflow(pending)
            return
        queue.append(pending)
        if len(queue) >= self.batch_size:
            self._wake.set()

    def _write_now(self, pending: Pending) -> None:
        try:
            with self._drain_lock:
                self._write(self._rows([pending]))
                # On the request thread: only what this process spooled. Other processes' files (there may be many
                # and large ones) are for a writer thread, flush() or `flask jwtgate audit replay`.
                self._maintain(own_only=True)
            if self.on_tick is not None:
                self.on_tick()
        except Exception:  # the audit log must never turn a request into a 500
            logger.exception("jwtgate: audit record could not be written")

    def _overflow(self, pending: Pending) -> None:
        rows = self._rows([pending])
        if not rows:
            return
        if self.spool.append(rows):
            with self._count_lock:
                self.spooled += 1
            self._spool_dirty = True
        else:
            self._drop(1, "the queue was full and the spool could not take it")

    def _start(self) -> bool:
        with self._start_lock:
            if self._thread is not None:
                return True
            thread = threading.Thread(target=self._run, name="jwtgate-audit-writer", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't start new thread", or the interpreter is shutting down
                logger.exception("jwtgate: the audit writer thread cannot be started")
                return False
            self._thread = thread
            return True

    # -- the writer thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if self._stopping:
                break
            try:
                with self._drain_lock:
                    self._drain()
                    self._maintain()
                if self.on_tick is not None:
                    self.on_tick()
            except Exception:  # keep the writer alive whatever happens; the next round retries
                logger.exception("jwtgate: audit writer round failed")

    def _drain(self) -> None:
        queue = self._queue
        take = queue.popleft
        while queue:
            # Only the drainer (under the drain lock) takes from the queue; request threads only append to it.
            batch: list[Pending] = [take() for _ in range(min(len(queue), self.batch_size))]
            self._write(self._rows(batch))

    def _rows(self, batch: Sequence[Pending]) -> Rows:
        """The batch's rows; if the batch cannot be made as a whole, every row that can be, the others counted."""
        try:
            return to_rows(batch, request_ids.take(len(batch)), self.times)
        except Exception:
            if len(batch) == 1:
                logger.exception("jwtgate: audit record could not be built")
                self._drop(1, "the record could not be built")
                return []
        return [row for pending in batch for row in self._rows([pending])]

    def _write(self, rows: Rows) -> None:
        """Rows to the database, or to the spool while the database is unavailable."""
        if not rows:
            return
        if time.monotonic() < self._retry_at:
            self._to_spool(rows)
            return
        try:
            self.insert(rows)
        except Exception as exc:
            if not isinstance(exc, sa.exc.DBAPIError) or is_unavailable(exc):
                self._unavailable(exc)
                self._to_spool(rows)
            else:
                self._write_one_by_one(rows)
            return
        self.written += len(rows)
        self._available()

    def _write_one_by_one(self, rows: Rows) -> None:
        """The database refused the batch as such: keep every row it takes, count the ones it refuses."""
        for row in rows:
            try:
                self.insert([row])
            except Exception as exc:
                if not isinstance(exc, sa.exc.DBAPIError) or is_unavailable(exc):
                    self._unavailable(exc)
                    self._to_spool([row])
                else:
                    self.last_error = type(exc).__name__
                    self._drop(1, f"the database refused the row ({type(exc).__name__})")
            else:
                self.written += 1

    def _to_spool(self, rows: Rows) -> None:
        if self.spool.append(rows):
            with self._count_lock:
                self.spooled += len(rows)
            self._spool_dirty = True
        else:
            self._drop(len(rows), "the database is unavailable and the spool could not take them")

    def _maintain(self, own_only: bool = False) -> None:
        """Replay the spool once the database answers again; record any gap."""
        now = time.monotonic()
        if now < self._retry_at:
            return
        if self._spool_dirty or (now >= self._next_spool_check and not own_only):
            if not own_only:
                self._next_spool_check = now + _SPOOL_CHECK_EVERY
            try:
                replayed, unreadable = self.spool.replay(self.insert, self.batch_size, own_only=own_only)
            except Exception as exc:
                self._unavailable(exc)
                return
            self._spool_dirty = False
            if replayed:
                self.replayed += replayed
                logger.info("jwtgate: %d spooled audit records written to the database", replayed)
                self._available()
            if unreadable:
                self._drop(unreadable, "spooled lines could not be read back")
        if self._unreported_drops:
            self._report_drops()

    def _report_drops(self) -> None:
        dropped = self._unreported_drops
        row = AuditRow(
            time=_utcnow(),
            request_id=request_ids.next(),
            username=None,
            auth_method="-",
            token_id=None,
            provider=None,
            client_address=None,
            peer_address=None,
            forwarded_for=None,
            method="-",
            path="-",
            endpoint=None,
            status=0,
            decision="system",
            reason="audit_records_dropped",
            detail=f"{dropped} audit record(s) could not be kept (process {os.getpid()})",
            latency_ms=None,
            user_agent=None,
        )
        try:
            self.insert([row])
        except Exception:
            return
        with self._count_lock:
            self._unreported_drops -= dropped

    def _unavailable(self, exc: BaseException) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + min(_MAX_BACKOFF, 0.25 * 2 ** min(self._failures, 6))
        self.last_error = type(exc).__name__
        if self._failures == 1:
            # The class name only: a driver's message can quote the statement and its parameters (callers' text).
            logger.warning(
                "jwtgate: the audit database is unavailable (%s); records go to the spool in %s until it is back",
                type(exc).__name__, self.spool.directory,
            )

    def _available(self) -> None:
        if self._failures:
            logger.warning("jwtgate: the audit database is available again")
        self._failures = 0
        self._retry_at = 0.0
        self.last_error = None

    def _drop(self, number: int, why: str) -> None:
        with self._count_lock:  # request threads (a full queue) and the writer thread both count
            self.dropped += number
            self._unreported_drops += number
            total = self.dropped
            now = time.monotonic()
            warn = now - self._last_warning >= _WARN_EVERY or self._last_warning == 0.0
            if warn:
                self._last_warning = now
        if warn:
            logger.warning("jwtgate: %d audit record(s) dropped: %s (%d in total)", number, why, total)

    # -- control ----------------------------------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Write (or spool) everything submitted so far; ``False`` if it took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        if not self._drain_lock.acquire(timeout=timeout):
            return False
        try:
            self._drain()
            if time.monotonic() < deadline:
                self._maintain()
        finally:
            self._drain_lock.release()
        return not self._queue

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left (at exit). Records submitted later are written at once."""
        self._stopping = True
        self.sync = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush(timeout)

    @property
    def queued(self) -> int:
        """Records waiting in memory."""
        return len(self._queue)

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "mode": "sync" if self.sync else "background",
            "writer_running": self._thread is not None and self._thread.is_alive(),
            "queued": self.queued,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "spool_bytes": self.spool.pending_bytes(),
            "database_available": self._failures == 0,
            "last_error": self.last_error,
        }


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# -- process-wide: every writer of this process, flushed at exit, reset after a fork -----------------------------------

_writers: weakref.WeakSet[AuditWriter] = weakref.WeakSet()


def close_all(timeout: float = 10.0) -> None:
    """Flush and stop every writer of this process."""
    for writer in list(_writers):
        try:
            writer.close(timeout)
        except Exception:
            logger.exception("jwtgate: audit writer could not be flushed at exit")


def _after_fork_in_child() -> None:
    request_ids.reset()
    for writer in list(_writers):
        writer.reset_after_fork()


atexit.register(close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)

_sigterm_installed = False


def flush_on_sigterm() -> None:
    """Make SIGTERM leave through ``sys.exit`` (so the atexit flush runs) where SIGTERM is still at its default.

    A process server that handles SIGTERM itself (gunicorn's workers and master, uWSGI) is left alone: gunicorn's
    workers already exit through ``sys.exit``. Only from the main thread, as Python requires.
    """
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _sigterm_installed = True


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise SystemExit(128 + signum)
