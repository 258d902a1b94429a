"""Signals (blinker) the gate sends; connect to them as to Flask's own signals.

``sender`` is always the Flask app.

- ``request_authenticated(app, identity=...)``: a request passed the gate with an identity (anonymous included).
- ``request_denied(app, error=...)``: the gate refused a request; ``error`` is the :class:`~.errors.GateDenied`.
- ``token_created(app, token_id=..., username=...)``, ``token_revoked(app, token_id=...)``: API token life cycle.
- ``settings_changed(app, settings=...)``: new settings took effect in this process.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

request_authenticated = _signals.signal("jwtgate-request-authenticated")
request_denied = _signals.signal("jwtgate-request-denied")
token_created = _signals.signal("jwtgate-token-created")
token_revoked = _signals.signal("jwtgate-token-revoked")
settings_changed = _signals.signal("jwtgate-settings-changed")
