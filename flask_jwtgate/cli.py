"""``flask jwtgate ...``: the gate's command-line interface."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup

from .extension import EXTENSION_KEY, GateState

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
    }
    click.echo(json.dumps(summary, indent=2))
    click.echo("configuration OK")
