"""Run-time settings: an admin's changes, kept in the gate's database, in force in every process within 2 seconds.

Layers, lowest first: the defaults, the Flask config, the constructor's keyword arguments (together, the *base*),
and the admin's *overrides*. Every change is a new *version*, a row holding the complete set of overrides as of that
version, so the history can be listed and any version reverted to (version 0 is the base alone). A change goes
through exactly the start-up validation (:meth:`~flask_jwtgate.settings.Settings.from_mapping`): a bad value is
refused, naming the key, and nothing changes anywhere.

Propagation. A change increments the ``settings`` revision counter in the same transaction
(``flask_jwtgate.revisions``); every process reads the counters at most once a second, on a request, and loads the
newest version when the counter moved. A version that cannot be applied in some process (a key file unreadable on
that host, say) leaves that process on its last good settings; it logs why and says so in the processes table,
which ``GET {prefix}/admin/settings/status`` shows.

Failing closed. Until a process has read the stored overrides once, it does not know whether an admin tightened
the policy, so the gate answers 503 ``settings_unavailable`` rather than guess with the base settings (a database that
cannot be reached at start-up costs availability, never a looser policy). Once read, an outage keeps the settings in
force. ``JWTGATE_RUNTIME_SETTINGS = False`` switches all of this off: the base is then the only layer.

Secrets. A provider's ``client_secret`` is never shown back (:data:`~flask_jwtgate.settings.MASK` stands in its place)
nor written into the history. Sending the mask back keeps the secret in force. A secret that comes from the base is
stored as a reference to it, never copied; a new one typed by an admin is stored encrypted (Fernet, with a key
derived from the app's ``SECRET_KEY``), and refused when the app has no ``SECRET_KEY``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .audit.model import UTCDateTime
from .database import DatabaseNotReady, GateDatabase, metadata
from .errors import AccessDenied, ConfigurationError, Conflict, InvalidParameter
from .redaction import redact_uri
from .revisions import Revisions, bump
from .settings import DEFAULTS, MASK, PREFIX, RESTART_ONLY, Settings, check_known_keys

logger = logging.getLogger("flask_jwtgate")

UTC = dt.timezone.utc
SETTINGS_REVISION = "settings"
#: Seconds between two heartbeats of a process in the processes table.
HEARTBEAT_INTERVAL = 30.0

settings_versions = sa.Table(
    "jwtgate_settings",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("changed_at", UTCDateTime(), nullable=False),
    sa.Column("changed_by", sa.String(255)),
    # The complete overrides as of this version (JSON, secrets encrypted or referenced, never in clear).
    sa.Column("overrides", sa.Text, nullable=False),
    # What changed, for the history: [{"key", "old", "new"}], secrets masked.
    sa.Column("changes", sa.Text, nullable=False),
    # Set when this version restored an older one.
    sa.Column("reverted_to", sa.Integer),
)

settings_processes = sa.Table(
    "jwtgate_settings_processes",
    metadata,
    sa.Column("process", sa.String(255), primary_key=True),
    sa.Column("version", sa.Integer),
    sa.Column("error", sa.String(512)),
    sa.Column("applied_at", UTCDateTime()),
    sa.Column("seen_at", UTCDateTime(), nullable=False),
)

_SECRET = "$secret"  # noqa: S105 - a marker in the stored JSON, not a secret
_FROM_BASE = "$base"


class RuntimeSettingsOff(AccessDenied):
    """``JWTGATE_RUNTIME_SETTINGS`` is off: settings come from the app's config only (403)."""

    reason = "runtime_settings_off"


def to_json(value: Any) -> Any:
    """A setting's value as JSON shows it: sets sorted into lists, tuples as lists."""
    if isinstance(value, (set, frozenset)):
        return sorted((to_json(item) for item in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def shown(key: str, value: Any) -> Any:
    """A setting's value as it may be shown to an admin or written into the history: secrets masked."""
    value = to_json(value)
    name = key[len(PREFIX) :]
    if name == "INTROSPECTION_CLIENT_SECRET":
        return MASK if value else value
    if name == "PROVIDERS" and isinstance(value, list):
        return [
            {**entry, "client_secret": MASK} if isinstance(entry, dict) and entry.get("client_secret") else entry
            for entry in value
        ]
    if name in ("DATABASE_URI", "RATE_LIMIT_STORAGE_URI") and isinstance(value, str):
        return redact_uri(value)
    if name == "RATE_LIMIT_STORAGE_OPTIONS" and isinstance(value, dict):
        return {k: MASK if "password" in k.lower() or "secret" in k.lower() else v for k, v in value.items()}
    return value


def _process_name() -> str:
    return f"{socket.gethostname()[:100]}:{os.getpid()}"


class RuntimeSettings:
    """The run-time settings of one app in one process.

    :param database: the gate's database (the versions live there).
    :param revisions: the app's revision counters (a change moves ``settings``).
    :param base: every ``JWTGATE_*`` key's value from the defaults, the config and the constructor.
    :param enabled: ``JWTGATE_RUNTIME_SETTINGS``.
    :param apply: takes new settings into use in this process: ``apply(settings, version)``.
    :param check: refuses settings this process cannot use (raises :class:`ConfigurationError`).
    :param secret_key: returns the app's ``SECRET_KEY`` (for secrets typed by an admin).
    :param clock: the gate's clock.

    ::

        runtime.change({"JWTGATE_READ_ONLY_GROUPS": ["viewers"]}, based_on=3, by="alice")   # -> 4
        runtime.history()
        runtime.revert(3, by="alice")                                                       # -> 5
    """

    def __init__(
        self,
        *,
        database: GateDatabase,
        revisions: Revisions,
        base: Mapping[str, Any],
        enabled: bool,
        apply: Callable[[Settings, int], None],
        check: Callable[[Settings], None],
        secret_key: Callable[[], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.base = {key: to_json(value) for key, value in base.items()}
        self.enabled = enabled
        self._apply = apply
        self._check = check
        self._secret_key = secret_key
        self.clock = clock
        #: The version in force in this process; ``None`` until the stored overrides have been read.
        self.version: int | None = None if enabled else 0
        #: The overrides in force, secrets in clear (in memory only).
        self.overrides: dict[str, Any] = {}
        #: Why the newest version could not be applied here, if it could not.
        self.error: str | None = None
        #: The newest version stored, as last read (applied here or not).
        self.newest: int | None = None
        self.process = _process_name()
        self._lock = threading.Lock()
        self._next_heartbeat = 0.0
        if enabled:
            revisions.subscribe(SETTINGS_REVISION, self._moved)
            revisions.after_read(self._heartbeat)

    # -- reading and applying ---------------------------------------------------------------------------------------

    def load(self) -> bool:
        """Read the newest version and take it into use; ``False`` (logged, and kept in the processes table) when it
        cannot be read or applied."""
        if not self.enabled:
            return True
        try:
            self.database.create_tables()
            with self.database.engine.connect() as connection:
                row = connection.execute(
                    sa.select(settings_versions).order_by(settings_versions.c.version.desc()).limit(1)
                ).first()
        except (sa.exc.SQLAlchemyError, DatabaseNotReady) as exc:
            logger.warning("jwtgate: the run-time settings cannot be read (%s); will retry", type(exc).__name__)
            return False
        version = 0 if row is None else row.version
        self.newest = version
        if version == self.version:
            return True
        try:
            overrides = {} if row is None else self._decode(json.loads(row.overrides))
            settings = self.build(overrides)
        except (ConfigurationError, ValueError) as exc:
            self.error = f"version {version}: {exc}"[:512]
            logger.error(
                "jwtgate: run-time settings version %d cannot be applied in this process (%s); %s",
                version,
                exc,
                f"keeping version {self.version}" if self.version is not None else "refusing requests until it can",
            )
            self._record_process()
            return False
        self._take(settings, version, overrides)
        return True

    def build(self, overrides: Mapping[str, Any]) -> Settings:
        """The settings the base with ``overrides`` makes; raise :class:`ConfigurationError` as at start-up."""
        settings = Settings.from_mapping({**self.base, **overrides})
        self._check(settings)
        return settings

    def _take(self, settings: Settings, version: int, overrides: dict[str, Any]) -> None:
        with self._lock:
            self.overrides = overrides
            self.version = version
            self.error = None
        self._apply(settings, version)
        self._record_process()

    def _moved(self, revision: int) -> None:
        self.load()

    def _heartbeat(self) -> None:
        now = self.clock()
        if now >= self._next_heartbeat:
            self._record_process()

    def _record_process(self) -> None:
        """Say which version this process runs (or why not) in the processes table; never raises."""
        now = self.clock()
        self._next_heartbeat = now + HEARTBEAT_INTERVAL
        at = dt.datetime.fromtimestamp(now, UTC)
        values = {"version": self.version, "error": self.error, "seen_at": at}
        try:
            with self.database.engine.begin() as connection:
                table = settings_processes
                updated = connection.execute(
                    table.update().where(table.c.process == self.process).values(**values, applied_at=at)
                    if self.error is None
                    else table.update().where(table.c.process == self.process).values(**values)
                ).rowcount
                if not updated:
                    connection.execute(table.insert().values(process=self.process, applied_at=at, **values))
        except (sa.exc.SQLAlchemyError, DatabaseNotReady):
            pass  # the status table is a report; the next heartbeat tries again

    # -- changing ---------------------------------------------------------------------------------------------------

    def effective(self) -> dict[str, Any]:
        """Every key's value in force, as an admin may see it (secrets masked)."""
        merged = {**self.base, **self.overrides}
        return {key: shown(key, merged[key]) for key in sorted(merged)}

    def sources(self) -> dict[str, str]:
        """Where each key's value comes from: ``"runtime"``, or ``"config"`` (the config or the constructor), or
        ``"default"``."""
        return {
            key: "runtime"
            if key in self.overrides
            else "default"
            if self.base[key] == to_json(DEFAULTS[key[len(PREFIX) :]])
            else "config"
            for key in sorted(self.base)
        }

    def change(
        self,
        updates: Mapping[str, Any],
        *,
        based_on: int | None,
        by: str | None,
        guard: Callable[[Settings], None] | None = None,
    ) -> int:
        """Validate and store ``updates`` (keys are config names) as a new version, and apply it here; return it.

        :raises RuntimeSettingsOff: run-time settings are switched off (403).
        :raises Conflict: ``based_on`` is not the version in force, or another change won the race (409).
        :raises InvalidParameter: a key or value is invalid (400, naming the key); nothing changes.
        :param guard: called with the new settings before they are stored; raises to refuse them (the admin API uses
            it to refuse a change that would lock out the admin making it).
        """
        self._require_enabled()
        # Compared with the database's newest version, not this process's: another process may have stored one
        # within the last second, before this one's revision check.
        self.load()
        with self._lock:
            current = self.version
            overrides = dict(self.overrides)
        if based_on is not None and based_on != current:
            raise Conflict(
                f"the settings changed since version {based_on}: version {current} is in force; reload and retry",
                reason="stale_version",
            )
        try:
            check_known_keys(updates)  # a misspelt key: 400 with the nearest one, as at start-up
        except ConfigurationError as exc:
            raise InvalidParameter(exc.key, str(exc)) from exc
        merged = {**self.base, **overrides}
        for key, value in updates.items():
            name = key[len(PREFIX) :]
            value = to_json(value)
            if name in RESTART_ONLY:
                if value != shown(key, merged[key]) and value != merged[key]:
                    raise InvalidParameter(
                        key, f"{key} cannot be changed at run time: set it in the app's config and restart"
                    )
                continue
            overrides[key] = self._unmask(key, value, merged[key])
        return self._store(overrides, current, by, reverted_to=None, guard=guard)

    def revert(self, version: int, *, by: str | None, guard: Callable[[Settings], None] | None = None) -> int:
        """Store a new version whose overrides are those of ``version`` (0: none), and apply it here."""
        self._require_enabled()
        self.load()  # based on the newest version, as in change()
        if version == 0:
            overrides: dict[str, Any] = {}
        else:
            with self.database.engine.connect() as connection:
                row = connection.execute(
                    sa.select(settings_versions.c.overrides).where(settings_versions.c.version == version)
                ).first()
            if row is None:
                raise InvalidParameter("version", f"there is no settings version {version}")
            try:
                overrides = self._decode(json.loads(row.overrides))
            except ValueError as exc:  # a secret sealed with another SECRET_KEY
                raise InvalidParameter("version", f"settings version {version} cannot be restored here: {exc}") from exc
        current = self.version
        if current is None and self.error is not None:
            # The newest version cannot be applied in this process (a secret it holds cannot be decrypted after
            # SECRET_KEY changed, a key file it names is missing here): every request is refused until it can.
            # Reverting to a version that can be applied is the way out, so it follows the newest version stored.
            current = self.newest
        return self._store(overrides, current, by, reverted_to=version, guard=guard)

    def _store(
        self,
        overrides: dict[str, Any],
        current: int | None,
        by: str | None,
        reverted_to: int | None,
        guard: Callable[[Settings], None] | None,
    ) -> int:
        if current is None:
            raise Conflict("the stored settings have not been read yet; retry shortly", reason="settings_unavailable")
        # An override equal to the base says nothing: drop it, so that "runtime" marks what an admin changed.
        overrides = {key: value for key, value in overrides.items() if value != self.base.get(key)}
        try:
            settings = self.build(overrides)
        except ConfigurationError as exc:
            raise InvalidParameter(exc.key, str(exc)) from exc
        if guard is not None:
            guard(settings)
        stored = self._encode(overrides)
        before = {**self.base, **self.overrides}
        after = {**self.base, **overrides}
        changes = [
            {"key": key, "old": shown(key, before[key]), "new": shown(key, after[key])}
            for key in sorted(after)
            if before[key] != after[key]
        ]
        version = current + 1
        try:
            with self.database.engine.begin() as connection:
                connection.execute(
                    settings_versions.insert().values(
                        version=version,
                        changed_at=dt.datetime.fromtimestamp(self.clock(), UTC),
                        changed_by=by,
                        overrides=json.dumps(stored, sort_keys=True),
                        changes=json.dumps(changes),
                        reverted_to=reverted_to,
                    )
                )
                bump(connection, SETTINGS_REVISION)
        except sa.exc.IntegrityError as exc:
            raise Conflict(
                f"another change became version {version} first; reload and retry", reason="stale_version"
            ) from exc
        self._take(settings, version, overrides)
        return version

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise RuntimeSettingsOff(
                "run-time settings are switched off (JWTGATE_RUNTIME_SETTINGS = False): change the app's config"
            )

    # -- reading back -------------------------------------------------------------------------------------------------

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest versions first, with what each changed (secrets masked)."""
        query = sa.select(
            settings_versions.c.version,
            settings_versions.c.changed_at,
            settings_versions.c.changed_by,
            settings_versions.c.changes,
            settings_versions.c.reverted_to,
        ).order_by(settings_versions.c.version.desc())
        with self.database.engine.connect() as connection:
            rows = connection.execute(query.limit(limit)).all()
        return [
            {
                "version": row.version,
                "changed_at": row.changed_at.isoformat().replace("+00:00", "Z"),
                "changed_by": row.changed_by,
                "changes": json.loads(row.changes),
                "reverted_to": row.reverted_to,
            }
            for row in rows
        ]

    def processes(self) -> list[dict[str, Any]]:
        """Which version each process that shares the database runs, newest heartbeat first."""
        with self.database.engine.connect() as connection:
            rows = connection.execute(
                sa.select(settings_processes).order_by(settings_processes.c.seen_at.desc())
            ).all()
        return [
            {
                "process": row.process,
                "version": row.version,
                "error": row.error,
                "applied_at": row.applied_at.isoformat().replace("+00:00", "Z") if row.applied_at else None,
                "seen_at": row.seen_at.isoformat().replace("+00:00", "Z"),
            }
            for row in rows
        ]

    # -- secrets ------------------------------------------------------------------------------------------------------

    def _unmask(self, key: str, value: Any, current: Any) -> Any:
        """``value`` with every mask replaced by the secret in force it stands for."""
        name = key[len(PREFIX) :]
        if name == "INTROSPECTION_CLIENT_SECRET":
            return current if value == MASK else value
        if name == "PROVIDERS" and isinstance(value, list):
            in_force = {e.get("name"): e for e in current if isinstance(e, dict)} if isinstance(current, list) else {}
            entries = []
            for index, entry in enumerate(value):
                if isinstance(entry, dict) and entry.get("client_secret") == MASK:
                    secret = in_force.get(entry.get("name"), {}).get("client_secret")
                    if not secret:
                        raise InvalidParameter(
                            key,
                            f"{key}[{index}].client_secret: provider {entry.get('name')!r} has no secret in force; "
                            "give its secret",
                        )
                    entry = {**entry, "client_secret": secret}
                entries.append(entry)
            return entries
        return value

    def _fernet(self, key: str) -> Fernet:
        secret_key = self._secret_key()
        if not secret_key:
            raise InvalidParameter(
                key,
                f"{key}: a client secret set at run time is stored encrypted with the app's SECRET_KEY, and this app "
                "has none; set SECRET_KEY, or set the secret in the app's config",
            )
        material = secret_key.encode() if isinstance(secret_key, str) else bytes(secret_key)
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"flask-jwtgate settings").derive(material)
        return Fernet(base64.urlsafe_b64encode(derived))

    def _encode(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """``overrides`` as stored: a secret from the base as a reference to it, any other encrypted."""
        return self._each_secret(overrides, lambda value: isinstance(value, str) and bool(value), self._seal)

    def _seal(self, key: str, secret: str, base_secret: Any) -> dict[str, Any]:
        if secret == base_secret:
            return {_FROM_BASE: True}
        return {_SECRET: self._fernet(key).encrypt(secret.encode()).decode()}

    def _decode(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """The stored overrides with their secrets in clear; :class:`ValueError` when one cannot be read."""
        return self._each_secret(stored, lambda value: isinstance(value, dict), self._open)

    def _each_secret(
        self,
        overrides: Mapping[str, Any],
        applies: Callable[[Any], bool],
        transform: Callable[[str, Any, Any], Any],
    ) -> dict[str, Any]:
        """``overrides`` with ``transform(key, secret, base_secret)`` applied to every client secret ``applies`` to:
        the shorthand provider's, and each listed provider's (its base secret is the base's provider of that name)."""
        result = dict(overrides)
        key = PREFIX + "INTROSPECTION_CLIENT_SECRET"
        if applies(overrides.get(key)):
            result[key] = transform(key, overrides[key], self.base.get(key))
        key = PREFIX + "PROVIDERS"
        if isinstance(overrides.get(key), list):
            base_entries = self.base.get(key) or []
            in_base = {e.get("name"): e.get("client_secret") for e in base_entries if isinstance(e, dict)}
            result[key] = [
                {**entry, "client_secret": transform(key, entry["client_secret"], in_base.get(entry.get("name")))}
                if isinstance(entry, dict) and applies(entry.get("client_secret"))
                else entry
                for entry in overrides[key]
            ]
        return result

    def _open(self, key: str, sealed: Mapping[str, Any], base_secret: Any) -> Any:
        if sealed.get(_FROM_BASE):
            if not base_secret:
                raise ValueError(f"{key}: a client secret refers to the app's config, which no longer has it")
            return base_secret
        try:
            return self._fernet(key).decrypt(str(sealed.get(_SECRET, "")).encode()).decode()
        except (InvalidToken, InvalidParameter) as exc:
            raise ValueError(f"{key}: a stored client secret cannot be decrypted (was SECRET_KEY changed?)") from exc


def secret_key_of(config: Mapping[str, Any]) -> Callable[[], Any]:
    """A function returning the app's ``SECRET_KEY`` as it is when asked (it may be set after the gate)."""
    ref = weakref.ref(config) if hasattr(config, "__weakref__") else None
    if ref is None:
        return lambda: config.get("SECRET_KEY")

    def secret_key() -> Any:
        alive = ref()
        return alive.get("SECRET_KEY") if alive is not None else None

    return secret_key
