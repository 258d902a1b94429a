"""The local spool: audit rows that could not go to the database yet, kept as JSON lines until they can.

Guarantees and how:

- **Nothing a caller sends can forge a line.** Each row is one ``json.dumps`` line; a newline in a path or a claim is
  escaped (``\\n``) inside its JSON string.
- **Several processes share one directory.** Each process appends to a file of its own (``<pid>-<random>.jsonl``),
  under an ``flock`` held for one ``write``. Any process may replay any file: it first *renames* it (atomic), then takes
  the file's lock, which waits at most for an append already under way. An owner checks under its lock that its path
  still names the file it holds, and opens a new one if not, so no append lands in a file being replayed.
- **Replaying twice is harmless.** A replayer that dies leaves a ``.replay`` file whose lock died with it; the next
  replayer takes it over and inserts every line again, and the database skips the rows it already has (the audit
  table's unique ``request_id``).
- **Bounded.** A process stops spooling at ``JWTGATE_AUDIT_SPOOL_MAX_BYTES`` and the writer counts and reports what it
  could not keep. A line that cannot be read back (a write torn by a crash) is counted the same way.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator

from .model import AuditRow, row_from_json, row_to_json

Rows = list[AuditRow]


class Spool:
    """JSON-lines files in ``directory``.

    :param directory: where the files live; made on first use.
    :param max_bytes: the most this process keeps in its own file; 0 turns spooling off.

    ::

        spool = Spool("/srv/app/instance/jwtgate-audit-spool", max_bytes=256 << 20)
        if not spool.append(rows):
            dropped += len(rows)
        replayed, unreadable = spool.replay(insert_rows, chunk=500)
    """

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: str | None = None
        self._pid = os.getpid()

    # -- writing (this process's own file) --------------------------------------------------------------------------

    def append(self, rows: Rows) -> bool:
        """Add ``rows``; ``False`` if they could not be kept (disk, permissions, or the size limit)."""
        if not rows or self.max_bytes <= 0:
            return not rows
        data = "".join(json.dumps(row_to_json(row), separators=(",", ":"), default=str) + "\n" for row in rows)
        payload = data.encode("utf-8", "replace")
        with self._lock:
            try:
                fd = self._own_file()
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    fd = self._still_ours(fd)
                    if os.fstat(fd).st_size + len(payload) > self.max_bytes:
                        return False
                    view = memoryview(payload)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                self._forget()
                return False
        return True

    def _own_file(self) -> int:
        if self._pid != os.getpid():  # a forked child never writes into its parent's file
            self._fd = None
            self._pid = os.getpid()
        if self._fd is None:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._path = os.path.join(self.directory, f"{os.getpid()}-{secrets.token_hex(4)}.jsonl")
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _still_ours(self, fd: int) -> int:
        """Under the lock: if a replayer renamed our file away, start a new one (and lock it instead)."""
        assert self._path is not None
        try:
            same = os.stat(self._path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        self._fd = None
        fd = self._own_file()
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _forget(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's file and lock are the parent's."""
        self._lock = threading.Lock()
        self._fd = None
        self._pid = os.getpid()

    # -- reading (any process's files) ------------------------------------------------------------------------------

    def files(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.endswith((".jsonl", ".replay")))

    def pending_bytes(self) -> int:
        total = 0
        for name in self.files():
            try:
                total += os.stat(os.path.join(self.directory, name)).st_size
            except FileNotFoundError:
                pass
        return total

    def replay(self, insert: Callable[[Rows], None], chunk: int, *, own_only: bool = False) -> tuple[int, int]:
        """Insert every spooled row (or only this process's own file's); returns ``(rows replayed, unreadable lines
        skipped)``.

        An exception from ``insert`` (the database is still down) propagates; the file stays for the next attempt.
        """
        replayed = unreadable = 0
        if own_only:
            own = self._path if self._fd is not None and self._pid == os.getpid() else None
            names = [os.path.basename(own)] if own is not None and os.path.exists(own) else []
        else:
            names = self.files()
        for name in names:
            claimed = self._claim(os.path.join(self.directory, name))
            if claimed is None:
                continue
            path, fd = claimed
            try:
                batch: Rows = []
                for row in _read_rows(fd):
                    if row is None:
                        unreadable += 1
                        continue
                    batch.append(row)
                    if len(batch) >= chunk:
                        insert(batch)
                        replayed += len(batch)
                        batch = []
                if batch:
                    insert(batch)
                    replayed += len(batch)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            finally:
                os.close(fd)  # releases the lock
        return replayed, unreadable

    def _claim(self, path: str) -> tuple[str, int] | None:
        """Take a file for replay: rename a live one away from its owner, or adopt an abandoned ``.replay``."""
        if path.endswith(".jsonl"):
            target = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.replay"
            try:
                os.rename(path, target)
                fd = os.open(target, os.O_RDONLY)
            except FileNotFoundError:
                return None
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only for an append already under way
            return target, fd
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # another process is replaying it now
            return None
        return path, fd


def _read_rows(fd: int) -> Iterator[AuditRow | None]:
    """Each line's row, or ``None`` for a line that cannot be read back."""
    with os.fdopen(os.dup(fd), "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
                yield row_from_json(data)
            except (ValueError, TypeError):
                yield None
