"""The admin console's page and static files (``flask_jwtgate.console``), with Flask's test client: they load without
credentials and carry no data; every other endpoint of the gate still requires authentication; the IP allowlist still
applies; the responses carry the strict security headers; whatever is rendered is escaped."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask

from flask_jwtgate import JWTGate
from flask_jwtgate.console import PAGES, PUBLIC_ENDPOINTS, STATIC_FILES
from flask_jwtgate.errors import ConfigurationError
from flask_jwtgate.settings import DEFAULTS, RESTART_ONLY
from flask_jwtgate.state import PUBLIC_ATTRIBUTE

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]

PAGE = "/jwtgate/admin/"
EXPECTED_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
#: The directives the console's policy must have, at least this strict.
CSP_DIRECTIVES = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "connect-src": "'self'",
    "form-action": "'none'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "require-trusted-types-for": "'script'",
}


class Markup(HTMLParser):
    """What an HTML document loads and runs: scripts (inline or not), style sheets, inline styles and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.inline_script = ""
        self.styles: list[str] = []
        self.icons: list[str] = []
        self.inline_styles: list[str] = []
        self.handlers: list[str] = []
        self.keys: list[str] = []
        self.restart: dict[str, str] = {}
        self.body: dict[str, str | None] = {}
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if "style" in values:
            self.inline_styles.append(tag)
        if tag == "script":
            self.scripts.append(values.get("src"))
            self._in_script = True
        if tag == "style":
            self.inline_styles.append(tag)
        if tag == "link" and values.get("rel") == "stylesheet":
            self.styles.append(values["href"] or "")
        if tag == "link" and values.get("rel") == "icon":
            self.icons.append(values["href"] or "")
        if tag == "div" and values.get("data-key"):
            key = values["data-key"] or ""
            self.keys.append(key)
            self.restart[key] = values.get("data-restart") or ""
        if tag == "body":
            self.body = values

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_script += data


def parse(html: str) -> Markup:
    markup = Markup()
    markup.feed(html)
    return markup


def csp(value: str) -> dict[str, str]:
    directives = {}
    for part in value.split(";"):
        name, _, rest = part.strip().partition(" ")
        directives[name] = rest.strip()
    return directives


def assert_console_headers(response: Any) -> None:
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get(name) == value, name
    directives = csp(response.headers["Content-Security-Policy"])
    for name, value in CSP_DIRECTIVES.items():
        assert directives.get(name) == value, (name, directives)
    assert "unsafe" not in response.headers["Content-Security-Policy"]


def test_the_page_and_its_files_load_anonymously_with_strict_headers(jwtgate_app_factory: AppFactory) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False)
    client = app.test_client()
    page = client.get(PAGE)
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert_console_headers(page)
    markup = parse(page.get_data(as_text=True))
    loaded = [*markup.scripts, *markup.styles, *markup.icons]
    assert sorted(loaded) == sorted(f"/jwtgate/admin/static/{name}" for name in STATIC_FILES)
    for url in loaded:
        assert url is not None
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.mimetype == STATIC_FILES[url.rsplit("/", 1)[1]]
        assert_console_headers(response)


def test_the_page_has_no_inline_script_style_or_handler(jwtgate_app_factory: AppFactory) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False)
    markup = parse(app.test_client().get(PAGE).get_data(as_text=True))
    assert None not in markup.scripts and markup.inline_script.strip() == ""
    assert markup.inline_styles == [] and markup.handlers == []


def test_the_script_writes_no_markup(jwtgate_app_factory: AppFactory) -> None:
    # The CSP's Trusted Types would make such a write throw; the script must not contain one in the first place.
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False)
    script = app.test_client().get("/jwtgate/admin/static/console.js").get_data(as_text=True)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


def test_a_static_name_outside_the_list_is_not_served(jwtgate_app_factory: AppFactory) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False)
    client = app.test_client()
    for name in ("console.py", "__init__.py", "py.typed", "CONSOLE.JS", "console.js.map", "%2e%2e"):
        response = client.get(f"/jwtgate/admin/static/{name}")
        assert response.status_code == 404, name
        assert_console_headers(response)
    for name in ("..%2Fconsole.py", "..%2F..%2Fconsole.py", "%2e%2e%2ftemplates%2fjwtgate%2fconsole.html"):
        # Decoded to a path with slashes: no view takes it, and the gate refuses it like any unknown path.
        response = client.get(f"/jwtgate/admin/static/{name}")
        assert response.status_code == 401, name
        assert b"import" not in response.data and b"<html" not in response.data


def test_the_page_carries_no_data_and_is_the_same_for_every_caller(
    jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory
) -> None:
    hostile = "<script>alert(1)</script>"
    app, _gate = jwtgate_app_factory(
        JWTGATE_AUDIT_ENABLED=False,
        JWTGATE_READ_ONLY_GROUPS=[hostile, "viewers-" + "q" * 12],
        JWTGATE_RATE_LIMIT="7/minute",
    )
    client = app.test_client()
    anonymous = client.get(PAGE).get_data(as_text=True)
    admin = jwtgate_token_factory("alice", groups=["jwtgate-admins"])
    signed_in = client.get(PAGE, headers={"Authorization": f"Bearer {admin}"}).get_data(as_text=True)
    assert anonymous == signed_in
    for value in (hostile, "&lt;script&gt;alert(1)", "q" * 12, "7/minute"):
        assert value not in anonymous


def test_the_page_takes_its_prefix_and_no_prefix_can_carry_markup(jwtgate_app_factory: AppFactory) -> None:
    prefix = "/api/gate~v1.0"
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False, JWTGATE_URL_PREFIX=prefix)
    response = app.test_client().get(prefix + "/admin/")
    assert response.status_code == 200
    markup = parse(response.get_data(as_text=True))
    assert markup.body["data-api"] == prefix
    assert markup.scripts == [prefix + "/admin/static/console.js"]
    # The prefix is the only setting the page shows, and one with markup in it never starts.
    with pytest.raises(ConfigurationError) as refused:
        jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False, JWTGATE_URL_PREFIX="/gate\"'&x")
    assert refused.value.key == "JWTGATE_URL_PREFIX"


def test_every_setting_is_on_exactly_one_page_and_restart_only_ones_are_marked(
    jwtgate_app_factory: AppFactory,
) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False)
    markup = parse(app.test_client().get(PAGE).get_data(as_text=True))
    assert sorted(markup.keys) == sorted(f"JWTGATE_{name}" for name in DEFAULTS)
    assert len(set(markup.keys)) == len(markup.keys)
    for key, restart in markup.restart.items():
        assert restart == ("yes" if key.removeprefix("JWTGATE_") in RESTART_ONLY else "no"), key
    assert [page.id for page in PAGES][:2] == ["providers", "test-token"]


@pytest.mark.parametrize("prefix", ["/jwtgate", "/api/gate"])
def test_the_console_without_its_slash_redirects_to_it(jwtgate_app_factory: AppFactory, prefix: str) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False, JWTGATE_URL_PREFIX=prefix)
    client = app.test_client()

    response = client.get(prefix + "/admin")
    followed = client.get(prefix + "/admin", follow_redirects=True)

    assert (response.status_code, response.headers["Location"]) == (308, prefix + "/admin/")
    assert_console_headers(response)
    assert followed.status_code == 200 and followed.mimetype == "text/html"


# -- nothing else under the prefix is open --------------------------------------------------------------------------


def _url_for_rule(rule: Any) -> str:
    """A concrete URL for a rule: each converter filled with a plausible value."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: "0123456789abcdef" if "id" in m.group(1) else "x", rule.rule)


@pytest.mark.parametrize(
    "config",
    [
        {},
        # Path rules that would open or exempt everything: the gate's own endpoints stay decided by the policy.
        {"JWTGATE_PUBLIC_PATHS": ["/**"], "JWTGATE_BYPASS_PATHS": ["/jwtgate/**"], "JWTGATE_PROTECTED_PATHS": []},
        {"JWTGATE_ENABLED": False},
    ],
)
def test_no_other_gate_endpoint_is_reachable_anonymously(
    jwtgate_app_factory: AppFactory, config: dict[str, Any]
) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False, **config)
    client = app.test_client()
    own = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("jwtgate.")]
    assert len(own) >= 15  # whoami, tokens, test-token, settings, audit, console, providers, lint, ...
    marked = {rule.endpoint for rule in own if getattr(app.view_functions[rule.endpoint], PUBLIC_ATTRIBUTE, False)}
    assert marked == PUBLIC_ENDPOINTS
    for rule in own:
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            url = _url_for_rule(rule)
            response = client.open(url, method=method, json={} if method in ("POST", "PUT") else None)
            if rule.endpoint in PUBLIC_ENDPOINTS:
                assert response.status_code in (200, 308, 404), (method, url)  # 308: the page's own redirect
            else:
                assert response.status_code == 401, (method, url, response.status_code)
                assert response.get_json()["reason"] == "missing_credentials"


def test_the_ip_allowlist_applies_to_the_console(jwtgate_app_factory: AppFactory) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False, JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"])
    client = app.test_client()
    for url in (PAGE, "/jwtgate/admin/static/console.js"):
        refused = client.get(url)
        assert refused.status_code == 403
        assert refused.get_json()["reason"] == "ip_not_allowed"
        assert client.get(url, environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


def test_a_bad_credential_on_the_page_is_refused_like_anywhere(jwtgate_app_factory: AppFactory) -> None:
    # Public does not mean credentials are ignored: sent, they must be valid (the policy's step 6).
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False)
    response = app.test_client().get(PAGE, headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
