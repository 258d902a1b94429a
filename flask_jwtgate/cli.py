"""``flask jwtgate ...``: the gate's command-line interface."""

from __future__ import annotations

import json
from typing import Any

import click
import sqlalchemy
from flask import current_app
from flask.cli import AppGroup

from .audit import AuditLog
from .audit.query import AuditFilter, export, iterate
from .console import lint_app
from .database import DatabaseNotReady
from .errors import InvalidParameter
from .redaction import redact_uri
from .state import EXTENSION_KEY, GateState

cli = AppGroup("jwtgate", help="Inspect and manage the API-authentication gate.")


@cli.command("check-config")
def check_config() -> None:
    """Show the effective settings (they were validated when the app started)."""
    state: GateState = current_app.extensions[EXTENSION_KEY]
    s = state.settings
    summary = {
        "enabled": s.enabled,
        "providers": [
            {
                "name": p.name,
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
            "jwt": s.accept_jwt,
            "api_tokens": s.accept_api_tokens,
            "personal_access_tokens": s.accept_pats,
            "basic": not s.disable_basic_auth,
            "users_may_create_tokens": s.allow_user_token_creation,
            "token_creator_groups": sorted(s.token_creator_groups),
        },
        "rate_limit": {
            "limit": s.rate_limit,
            "groups": dict(s.rate_limit_groups),
            "auth_failure_limit": s.auth_failure_limit,
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
    }
    # Legal but probably wrong (flask_jwtgate.lint): advice, so the exit status does not change.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    summary["warnings"] = [finding.to_dict() for finding in lint_app(app, state)]
    click.echo(json.dumps(summary, indent=2))
    click.echo("configuration OK")


def _database_text(state: GateState) -> str | None:
    database = state.database
    if database is None:  # pragma: no cover - init_app always sets it up
        return None
    try:
        return database.engine.url.render_as_string(hide_password=True)
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


@audit_cli.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "ndjson"]), default="csv", show_default=True)
@click.option("--since", help="Only records at or after this time (ISO 8601, e.g. 2025-01-31T00:00:00Z).")
@click.option("--until", help="Only records before this time.")
@click.option("--user", help="Only this username.")
@click.option("--status", help="Only this HTTP status (403) or class (4xx).")
@click.option("--decision", type=click.Choice(["allow", "deny", "system"]), help="Only allowed or denied requests.")
@click.option("--reason", help="Only this reason code, e.g. expired, read_only, rate_limited.")
@click.option("--path", help="Only this path; a trailing * makes it a prefix.")
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


@cli.command("test-token")
@click.argument("token")
@click.option("--method", default="GET", show_default=True, help="The request method to decide for.")
@click.option("--path", default="/", show_default=True, help="The request path to decide for.")
@click.option("--ip", default=None, help="The client address (default 127.0.0.1).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def test_token(token: str, method: str, path: str, ip: str | None, as_json: bool) -> None:
    """Explain every check the gate makes on TOKEN for one request, and the decision."""
    from .explain import explain, render_text
    from .policy import PLAIN_VIEW
    from .token_views import view_for

    state = _state()
    view = view_for(state, method, path) if path.startswith("/") else PLAIN_VIEW
    report = explain(state.keeper, token, method=method, path=path, ip=ip, view=view, limiter=state.limiter)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_text(report))


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
@click.option("--expires-in-days", default=90, show_default=True, type=click.IntRange(1, 3650))
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
