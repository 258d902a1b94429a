"""``flask jwtgate ...``: the gate's command-line interface.

Numbers on the command line are read as the HTTP API reads them, in ASCII digits only (:class:`WholeNumber`);
click's own ``int`` type takes ``int()``'s wider reading (``１``, ``1_000``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click
import sqlalchemy
from flask import current_app
from flask.cli import AppGroup

from .api_tokens import DEFAULT_EXPIRY_DAYS, MAX_EXPIRY_DAYS
from .ascii_numbers import parse_whole
from .audit import AuditLog
from .audit.query import DECISIONS, FILTERS, AuditFilter, export, iterate
from .console import lint_app
from .database import DatabaseNotReady
from .errors import InvalidParameter
from .redaction import redact_uri
from .state import EXTENSION_KEY, GateState

cli = AppGroup("jwtgate", help="Inspect and manage the API-authentication gate.")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# Subscripting (ParamType[int]) would fail at run time with the older click releases Flask still allows.
class WholeNumber(click.ParamType):  # type: ignore[type-arg]
    """A whole number in ASCII digits from ``minimum`` to ``maximum``: anything else is a usage error.

    ::

        @click.option("--expires-in-days", type=WholeNumber(1, 3650), default=90)
    """

    name = "integer"

    def __init__(self, minimum: int, maximum: int) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number = value if type(value) is int else parse_whole(value) if isinstance(value, str) else None
        if number is None or not self.minimum <= number <= self.maximum:
            self.fail(f"{value!r} is not a whole number from {self.minimum} to {self.maximum}", param, ctx)
        return number


@cli.command("check-config")
@click.option("--json", "as_json", is_flag=True, help="Print the summary alone, as one JSON object (for scripts).")
def check_config(as_json: bool) -> None:
    """Show the effective settings (they were validated when the app started).

    Credentials are shown as they are in effect: personal access tokens and Basic
    credentials are accepted only when their setting allows them AND the app
    registered its validator (@gate.pat_validator, @gate.basic_auth_validator).
    Every password in a URI is masked.

    \b
    Exit status:
      0  the configuration is OK
    A configuration the gate refuses stops the app before this command runs:
    Flask then shows the ConfigurationError, naming the key, and exits with 1.
    Other non-zero codes are kept for warnings a later check may report.
    """
    state: GateState = current_app.extensions[EXTENSION_KEY]
    s = state.settings
    hooks = state.hooks
    credentials = {
        "jwt": s.accept_jwt and bool(s.providers),
        "api_tokens": s.accept_api_tokens,
        "personal_access_tokens": s.accept_pats and hooks.pat_validator is not None,
        "basic": not s.disable_basic_auth and hooks.basic_auth_validator is not None,
    }
    notes = [
        note
        for applies, note in (
            (s.accept_jwt and not s.providers, "JWTGATE_ACCEPT_JWT is on, but no provider is configured: JWTs are "
             "refused"),
            (s.accept_pats and hooks.pat_validator is None, "JWTGATE_ACCEPT_PATS is on, but the app registered no "
             "@gate.pat_validator: personal access tokens are refused"),
            (not s.disable_basic_auth and hooks.basic_auth_validator is None, "Basic authentication is not disabled, "
             "but the app registered no @gate.basic_auth_validator: Basic credentials are refused"),
        )
        if applies
    ]
    summary = {
        "enabled": s.enabled,
        "providers": [
            {
                "name": p.name,
                "jwks_url": redact_uri(p.jwks_url) if p.jwks_url else None,
                "introspection_url": redact_uri(p.introspection_url) if p.introspection_url else None,
                "algorithms": list(p.algorithms),
                "issuer": p.issuer,
                "audience": list(p.audience),
                "username_claim": p.username_claim,
                "groups_claim": p.groups_claim,
                "leeway": p.leeway,
            }
            for p in s.providers
        ],
        "protected_paths": [p.text for p in s.protected_paths],
        "public_paths": [p.text for p in s.public_paths],
        "restricted_public_paths": [p.text for p in s.restricted_public_paths],
        "bypass_paths": [p.text for p in s.bypass_paths],
        "allowed_groups": sorted(s.allowed_groups),
        "read_only_groups": sorted(s.read_only_groups),
        "admin_groups": sorted(s.admin_groups),
        "ip_allowlist": [str(n) for n in s.ip_allowlist],
        "proxy_header": s.proxy_header,
        "trusted_proxies": [str(n) for n in s.trusted_proxies],
        "allow_cors_preflight": s.allow_cors_preflight,
        "credentials": {
            **credentials,
            "users_may_create_tokens": s.allow_user_token_creation,
            "token_creator_groups": sorted(s.token_creator_groups),
        },
        "rate_limit": {
            "limit": s.rate_limit,
            "groups": dict(s.rate_limit_groups),
            "auth_failure_limit": s.auth_failure_limit,
            "ipv6_prefix": s.rate_limit_ipv6_prefix,
            "storage": redact_uri(s.rate_limit_storage_uri),
            "fail_open": s.rate_limit_fail_open,
        },
        "audit": {
            "enabled": s.audit_enabled,
            "retention_days": s.audit_retention_days,
            "max_entries": s.audit_max_entries,
            "prune_interval": s.audit_prune_interval,
            "batch_size": s.audit_batch_size,
            "flush_interval": s.audit_flush_interval,
            "queue_size": s.audit_queue_size,
            "spool_dir": state.audit.writer.spool.directory if state.audit is not None else s.audit_spool_dir,
        },
        "database": _database_text(state),
        "url_prefix": s.url_prefix,
        "runtime_settings": s.runtime_settings,
        "notes": notes,
    }
    # Legal but probably wrong (flask_jwtgate.lint): advice, so the exit status does not change.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    summary["warnings"] = [finding.to_dict() for finding in lint_app(app, state)]
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo("\n".join(_text_lines(summary)))
    click.echo("configuration OK")


def _text_lines(value: Any, indent: str = "") -> Iterator[str]:
    """A summary for people: one ``name: value`` line per setting, nested by indentation."""
    items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
    for name, item in items:
        if name is None and isinstance(item, dict) and item:  # a list of objects, as YAML writes one: "- name: x"
            lines = list(_text_lines(item, indent + "  "))
            yield f"{indent}- {lines[0][len(indent) + 2:]}"
            yield from lines[1:]
            continue
        label = f"{indent}{name}:" if name is not None else f"{indent}-"
        # Objects, and lists of objects or of sentences (the notes), take a line per entry.
        if isinstance(item, dict) or (
            isinstance(item, list) and any(isinstance(i, (dict, list)) or " " in str(i) for i in item)
        ):
            yield label if item else f"{label} none"
            yield from _text_lines(item, indent + "  ")
        else:
            yield f"{label} {_text_value(item)}"


def _text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_text_value(item) for item in value) if value else "none"
    return _CONTROL.sub("?", str(value))


def _database_text(state: GateState) -> str | None:
    database = state.database
    if database is None:  # pragma: no cover - init_app always sets it up
        return None
    try:
        return database.display_url
    except DatabaseNotReady:
        return "the host's Flask-SQLAlchemy database (not registered on the app yet)"


# -- flask jwtgate audit ... -------------------------------------------------------------------------------------------

audit_cli = AppGroup("audit", help="Read, export and prune the audit log.")
cli.add_command(audit_cli)


def _audit_log() -> AuditLog:
    state: GateState = current_app.extensions[EXTENSION_KEY]
    if state.audit is None:  # pragma: no cover - init_app always installs it
        raise click.ClickException("the audit log is not set up on this app")
    return state.audit


@audit_cli.command("prune")
def audit_prune() -> None:
    """Delete records beyond JWTGATE_AUDIT_RETENTION_DAYS and JWTGATE_AUDIT_MAX_ENTRIES now."""
    try:
        result = _audit_log().prune()
    except (sqlalchemy.exc.SQLAlchemyError, DatabaseNotReady) as exc:
        raise click.ClickException(f"the audit database cannot be reached ({type(exc).__name__})") from exc
    if result is None:
        raise click.ClickException("another process is pruning the audit log now; try again later")
    click.echo(f"deleted {result.deleted} audit records ({result.by_age} by age, {result.by_count} by count)")


def _filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per audit filter, from the list the admin API reads too (``audit.query.FILTERS``)."""
    for name, help_text in reversed(list(FILTERS.items())):
        kind = click.Choice(DECISIONS) if name == "decision" else None
        command = click.option(f"--{name}", type=kind, help=help_text)(command)
    return command


@audit_cli.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "ndjson"]), default="csv", show_default=True)
@_filter_options
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-", help="File (default: stdout).")
def audit_export(fmt: str, output: Any, **filters: str | None) -> None:
    """Write the audit log (oldest first), streaming: it is never loaded into memory."""
    audit = _audit_log()
    try:
        where = AuditFilter.from_args({name: value for name, value in filters.items() if value})
    except InvalidParameter as exc:
        raise click.BadParameter(exc.description, param_hint=f"--{exc.parameter}") from exc
    try:
        for chunk in export(iterate(audit.database.engine, where), fmt):
            output.write(chunk)
    except (sqlalchemy.exc.SQLAlchemyError, DatabaseNotReady) as exc:
        raise click.ClickException(f"the audit database cannot be read ({type(exc).__name__})") from exc


@audit_cli.command("status")
def audit_status() -> None:
    """This process's writer counters, the spool, and the number of records stored."""
    audit = _audit_log()
    status: dict[str, Any] = {"process": audit.status(), "database": None, "records": None}
    try:
        status["database"] = audit.database.dialect
        status["records"] = audit.store.count()
    except (sqlalchemy.exc.SQLAlchemyError, DatabaseNotReady) as exc:
        status["database_error"] = type(exc).__name__
    click.echo(json.dumps(status, indent=2))


@audit_cli.command("replay")
def audit_replay() -> None:
    """Write spooled records (kept while the database was down) to the database now."""
    audit = _audit_log()
    spool = audit.writer.spool
    try:
        replayed, unreadable = spool.replay(audit.store.insert, audit.writer.batch_size)
    except (sqlalchemy.exc.SQLAlchemyError, DatabaseNotReady) as exc:
        raise click.ClickException(f"the audit database cannot be reached ({type(exc).__name__})") from exc
    skipped = f"; {unreadable} unreadable lines skipped" if unreadable else ""
    click.echo(f"replayed {replayed} spooled audit records{skipped}")


# -- the Test Token tool and API tokens ------------------------------------------------------------------------------


def _state() -> GateState:
    state: GateState = current_app.extensions[EXTENSION_KEY]
    return state


#: ``flask jwtgate test-token``'s exit status: the request allowed; the token valid but the request refused; the
#: token invalid (and the request refused). 2 is also click's code for a usage error: either way, not allowed.
EXIT_ALLOWED, EXIT_REFUSED, EXIT_INVALID_TOKEN = 0, 1, 2


@cli.command("test-token")
@click.argument("token")
@click.option("--method", default="GET", show_default=True, help="The request method to decide for.")
@click.option("--path", default="/", show_default=True, help="The request path to decide for.")
@click.option("--ip", default=None, help="The client address (default 127.0.0.1).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def test_token(token: str, method: str, path: str, ip: str | None, as_json: bool) -> None:
    """Explain every check the gate makes on TOKEN for one request, and the decision.

    A TOKEN of - reads the token from standard input, so that it stays out of
    the shell's history: flask jwtgate test-token - < token.txt

    \b
    Exit status:
      0  the request would be allowed
      1  the token is valid, but the request would be refused
      2  the token is invalid, and the request would be refused
         (2 is also the code of a usage error)
    """
    from .explain import explain, render_text
    from .policy import PLAIN_VIEW
    from .token_views import view_for

    if token == "-":  # noqa: S105 - the placeholder for standard input, not a password
        token = sys.stdin.read().strip(" \t\r\n")
        if not token:
            raise click.BadParameter("standard input holds no token", param_hint="TOKEN")
    state = _state()
    view = view_for(state, method, path) if path.startswith("/") else PLAIN_VIEW
    report = explain(state.keeper, token, method=method, path=path, ip=ip, view=view, limiter=state.limiter)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_text(report))
    code = EXIT_ALLOWED if report.allowed else EXIT_REFUSED if report.valid else EXIT_INVALID_TOKEN
    click.get_current_context().exit(code)


tokens_cli = AppGroup("tokens", help="Create, list and revoke the gate's API tokens.")
cli.add_command(tokens_cli)


def _token_store() -> Any:
    store = _state().api_tokens
    if store is None:  # pragma: no cover - init_app always installs it
        raise click.ClickException("API tokens are not set up")
    return store


@tokens_cli.command("create")
@click.argument("username")
@click.option("--name", required=True, help="What the token is for.")
@click.option(
    "--expires-in-days",
    default=DEFAULT_EXPIRY_DAYS,
    type=WholeNumber(1, MAX_EXPIRY_DAYS),
    help=f"Days until the token expires: {DEFAULT_EXPIRY_DAYS} unless given, at most {MAX_EXPIRY_DAYS}.",
)
@click.option(
    "--provider",
    default=None,
    help="The provider USERNAME belongs to (default: a user of the host's directory, as PATs and Basic name them).",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="A group the token carries (repeat for several). Without any, and without a groups_loader for the user, "
    "the token is read-only wherever read-only groups are configured.",
)
def tokens_create(
    username: str, name: str, expires_in_days: int, provider: str | None, groups: tuple[str, ...]
) -> None:
    """Create an API token for USERNAME and print its secret (shown this once)."""
    from .token_views import rights_for_another

    state = _state()
    if provider is not None and all(p.name != provider for p in state.settings.providers):
        raise click.BadParameter(f"{provider!r} is not a configured provider", param_hint="--provider")
    carried, read_only = rights_for_another(state, provider, frozenset(groups) if groups else None)
    token, secret = _token_store().create(
        username,
        name=name,
        expires_in_days=expires_in_days,
        created_by="cli",
        provider=provider,
        groups=carried,
        read_only=read_only,
    )
    click.echo(json.dumps({**token.to_dict(), "token": secret}, indent=2))


@tokens_cli.command("list")
@click.option("--username", default=None, help="Only this user's tokens.")
def tokens_list(username: str | None) -> None:
    """List API tokens (never their secrets)."""
    click.echo(json.dumps([token.to_dict() for token in _token_store().list(username)], indent=2))


@tokens_cli.command("revoke")
@click.argument("token_id")
def tokens_revoke(token_id: str) -> None:
    """Revoke the API token TOKEN_ID; every worker and host refuses it within 2 seconds."""
    if not _token_store().revoke(token_id):
        raise click.ClickException(f"no live token {token_id!r}")
    click.echo(f"revoked {token_id}")


# -- flask jwtgate settings ... ----------------------------------------------------------------------------------------

settings_cli = AppGroup(
    "settings", help="Show and change the run-time settings (every process applies a change within 2 s)."
)
cli.add_command(settings_cli)


def _runtime_call(action: Any) -> Any:
    """Run a change of the run-time settings; a refusal is a usage error naming why, never a traceback."""
    from .errors import GateDenied

    try:
        return action()
    except GateDenied as exc:
        raise click.ClickException(exc.description) from exc
    except (sqlalchemy.exc.SQLAlchemyError, DatabaseNotReady) as exc:
        raise click.ClickException(f"the gate's database cannot be reached ({type(exc).__name__})") from exc


def _record_cli_change(state: GateState, version: int, reverted_to: int | None = None) -> None:
    from .settings_views import describe

    history = state.runtime.history(limit=1)
    changes = history[0]["changes"] if history and history[0]["version"] == version else []
    if state.audit is not None:
        state.audit.event("settings_changed", describe(version, changes, reverted_to), method="CLI", path="settings")
        state.audit.flush()


@settings_cli.command("show")
def settings_show() -> None:
    """Print every setting in force and the version, as JSON (secrets masked)."""
    runtime = _state().runtime
    click.echo(json.dumps({"version": runtime.version, **runtime.effective()}, indent=2))


@settings_cli.command("set")
@click.argument("key")
@click.argument("value")
@click.option("--version", "based_on", type=click.IntRange(0), help="Refuse if the version in force is not this one.")
def settings_set(key: str, value: str, based_on: int | None) -> None:
    """Set KEY (e.g. JWTGATE_READ_ONLY_GROUPS) to VALUE, read as JSON (['viewers'], true, 60) or else as text."""
    state = _state()
    if not key.startswith("JWTGATE_"):
        key = "JWTGATE_" + key
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    version = _runtime_call(lambda: state.runtime.change({key: parsed}, based_on=based_on, by="cli"))
    _record_cli_change(state, version)
    click.echo(f"settings version {version} is in force; every process applies it within 2 seconds")


@settings_cli.command("history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="How many versions.")
def settings_history(limit: int) -> None:
    """Print the newest versions first, with what each changed (secrets masked)."""
    state = _state()
    click.echo(json.dumps(_runtime_call(lambda: state.runtime.history(limit)), indent=2))


@settings_cli.command("revert")
@click.argument("version", type=click.IntRange(0))
def settings_revert(version: int) -> None:
    """Make the overrides of VERSION (0: none, the config alone) the settings in force, as a new version."""
    state = _state()
    new = _runtime_call(lambda: state.runtime.revert(version, by="cli"))
    _record_cli_change(state, new, reverted_to=version)
    click.echo(f"settings version {new} (the overrides of version {version}) is in force")
