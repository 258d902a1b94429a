"""The admin console in a real browser: Debian's Chromium, driven by Playwright, against the example app under a real
``gunicorn -w 2`` on the real PostgreSQL (the two workers share the database, as in production).

One server and one browser for the whole walk, in the order an admin would go: a non-admin's token is refused; an
admin signs in, makes a developers' group read-only (every worker refuses its writes within 2 s, and
``/admin/settings/status`` shows both workers at the new version), tests a token, makes and revokes an API token,
filters the audit log, and restores the old settings from the history. The page must run under its own CSP: any
script error or CSP / Trusted Types violation fails the test. Screenshots go to ``JWTGATE_CONSOLE_SCREENSHOTS`` (a
folder) when it is set, else to the test's temporary folder.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from audit_helpers import wait_for
from conftest import service_missing
from servers import Gunicorn
from test_audit_gunicorn import Tokens, start_gunicorn, stored

CHROMIUM = "/usr/bin/chromium"
#: What the probe of this machine kind started Chromium with, as root and with no network beyond loopback.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ISSUE = "/rest/api/2/issue"
#: The contract: every worker applies a settings change within 2 seconds.
PROPAGATION = 2.0


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("Playwright", "the 'playwright' package is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        service_missing("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("JWTGATE_CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Api:
    """Plain HTTP calls to the server, beside the browser."""

    def __init__(self, server: Gunicorn) -> None:
        self.server = server

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else None
        finally:
            connection.close()

    def writes(self, token: str, count: int) -> list[int]:
        """``count`` issue creations at once, each on its own connection (so both workers take some)."""
        body = {"fields": {"summary": "console test", "project": {"key": "DEMO"}}}
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda _: self.call("POST", ISSUE, token, body)[0], range(count)))

    def converge(self, admin: str, writer: str, version: int, expected: int, since: float) -> None:
        """Write until ``/admin/settings/status`` shows both workers at ``version`` (within the contract's 2 s of
        ``since``), then check that every write now gets ``expected``."""
        while True:
            self.writes(writer, 8)
            status, body = self.call("GET", "/jwtgate/admin/settings/status", admin)
            assert status == 200, body
            processes = body["processes"]
            elapsed = time.monotonic() - since
            if len(processes) == 2 and all(p["version"] == version for p in processes):
                break
            assert elapsed < PROPAGATION, f"not every worker runs version {version} after {elapsed:.2f} s: {processes}"
        for process in processes:  # the two rows are this server's two workers
            pid = int(process["process"].rsplit(":", 1)[1])
            assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == self.server.process.pid
        assert set(self.writes(writer, 16)) == {expected}


def test_an_admin_walks_through_the_console_in_a_real_browser(
    browser: Any, postgres_schema_url: str, tmp_path: Path, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    tokens = Tokens(tmp_path / "instance")
    server = start_gunicorn(tmp_path, postgres_schema_url)
    try:
        _walk(browser, expect, server, Api(server), tokens, postgres_schema_url, screenshots)
    finally:
        server.stop()


def _walk(browser: Any, expect: Any, server: Gunicorn, api: Api, tokens: Tokens, database: str, shots: Path) -> None:
    alice, bob, carol = tokens("alice"), tokens("bob"), tokens("carol")  # admin; jira-developers; viewers
    base = f"http://127.0.0.1:{server.port}/jwtgate/admin/"
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on(
        "console",
        lambda message: problems.append(message.text)
        if "Content Security Policy" in message.text or "TrustedHTML" in message.text
        else None,
    )

    # A non-admin's token is refused, and not kept.
    page.goto(base)
    page.fill("#signin-token", bob)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("bob's, who is not in an admin group")
    expect(page.locator("#console-view")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0

    # The admin signs in; the token is in sessionStorage, not in a cookie.
    page.fill("#signin-token", alice)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#whoami")).to_contain_text("Signed in as alice")
    assert page.evaluate("sessionStorage.getItem('jwtgate.console.token')") == alice
    assert page.context.cookies() == []

    # Groups and IP: a refused value is shown next to its field, and nothing is saved.
    page.click("#tab-access")
    page.fill("#f-JWTGATE_IP_ALLOWLIST", "10.0.0.0/8\nnot-an-address")
    page.click('form[data-page="access"] button.save')
    expect(page.locator("#e-JWTGATE_IP_ALLOWLIST")).to_contain_text("JWTGATE_IP_ALLOWLIST")
    expect(page.locator("#f-JWTGATE_IP_ALLOWLIST")).to_have_attribute("aria-invalid", "true")
    page.fill("#f-JWTGATE_IP_ALLOWLIST", "")

    # The developers become read-only; every worker refuses their writes within 2 s.
    assert set(api.writes(bob, 4)) == {201}
    page.fill("#f-JWTGATE_READ_ONLY_GROUPS", "viewers\njira-developers")
    saved = time.monotonic()
    page.click('form[data-page="access"] button.save')
    expect(page.locator('form[data-page="access"] .status')).to_contain_text("version 1 is in force")
    api.converge(alice, bob, version=1, expected=403, since=saved)
    expect(page.locator("#s-JWTGATE_READ_ONLY_GROUPS")).to_contain_text("Changed at run time")
    page.screenshot(path=str(shots / "console-groups.png"), full_page=True)

    # Test Token: carol (viewers) may not write; the report says which check refused.
    page.click("#tab-test-token")
    page.fill("#tt-token", carol)
    page.select_option("#tt-method", "POST")
    page.fill("#tt-path", ISSUE)
    page.click("#test-token-form button[type=submit]")
    expect(page.locator("#tt-verdict")).to_have_text(
        "Token valid: yes. POST /rest/api/2/issue: refused (403 insufficient_scope read_only)."
    )
    read_only = page.locator("#tt-checks tbody tr", has_text="read-only groups")
    expect(read_only).to_contain_text("fail")
    expect(page.locator("#tt-identity")).to_contain_text("carol")
    page.screenshot(path=str(shots / "console-test-token.png"), full_page=True)

    # API tokens: made (the secret shown once, as text), used, revoked.
    page.click("#tab-tokens")
    page.fill("#tk-name", "<b>ci</b>")
    page.fill("#tk-days", "7")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#tk-secret-value")).to_contain_text("jgt_")
    secret = page.locator("#tk-secret-value").text_content()
    assert secret is not None and secret.startswith("jgt_")
    status, who = api.call("GET", "/jwtgate/whoami", secret)
    assert (status, who["auth_method"], who["username"]) == (200, "api_token", "alice")
    row = page.locator("#tokens-table tbody tr", has_text="<b>ci</b>")  # the name is text, not markup
    expect(row).to_have_count(1)
    assert page.locator("#tokens-table tbody b").count() == 0
    page.click("#tk-secret-done")
    expect(page.locator("#tk-secret")).to_be_hidden()
    row.get_by_role("button", name="Revoke token <b>ci</b>").click()
    expect(row).to_contain_text("revoked")
    wait_for(lambda: api.call("GET", "/jwtgate/whoami", secret)[0] == 401, PROPAGATION + 1, "the revocation")

    # Audit logs: bob's refused writes, filtered.
    page.click("#tab-audit")
    page.fill("#af-user", "bob")
    page.select_option("#af-decision", "deny")

    def filtered_rows() -> bool:
        page.click("#audit-filter button[type=submit]")
        page.wait_for_load_state("networkidle")
        # Only once the filtered page has replaced the unfiltered one: every row bob's denial, and some read_only.
        shown = page.locator("#audit-table tbody tr td:nth-child(2)").all_text_contents()
        return bool(shown) and set(shown) == {"bob"} and page.locator(
            "#audit-table tbody tr", has_text="read_only"
        ).count() > 0

    wait_for(filtered_rows, 10, "bob's refused writes in the audit table")
    users = page.locator("#audit-table tbody tr td:nth-child(2)").all_text_contents()
    decisions = page.locator("#audit-table tbody tr td:nth-child(6)").all_text_contents()
    assert set(users) == {"bob"} and set(decisions) == {"deny"}
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "console-audit.png"))
    with page.expect_download() as downloading:  # fetched with the bearer token, saved from a blob
        page.click("#audit-export")
    download = downloading.value
    assert download.suggested_filename == "jwtgate-audit.csv"
    exported = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert exported and {(r["username"], r["decision"]) for r in exported} == {("bob", "deny")}

    # History: the change is listed; restoring version 0 lets the developers write again, in every worker.
    page.click("#tab-history")
    version_1 = page.locator("#history-table tbody tr[data-version='1']")
    expect(version_1).to_contain_text("JWTGATE_READ_ONLY_GROUPS")
    expect(page.locator("#processes-table tbody tr")).to_have_count(2)
    restored = time.monotonic()
    page.click("#revert-0")
    expect(page.locator("#history-status")).to_contain_text("Version 2 (the settings of version 0) is in force")
    api.converge(alice, bob, version=2, expected=201, since=restored)
    expect(page.locator("#f-JWTGATE_READ_ONLY_GROUPS")).to_have_value("viewers")
    page.screenshot(path=str(shots / "console-history.png"), full_page=True)

    # Someone else saves meanwhile: the console's save is refused (409) and says to reload, which shows their change.
    status, _body = api.call("PUT", "/jwtgate/admin/settings", alice, {"JWTGATE_TOKEN_CREATOR_GROUPS": ["ci"]})
    assert status == 200
    page.click("#tab-access")
    page.fill("#f-JWTGATE_ALLOWED_GROUPS", "jwtgate-admins\njira-developers")
    page.click('form[data-page="access"] button.save')
    expect(page.locator('form[data-page="access"] .status')).to_contain_text("changed meanwhile")
    page.click('form[data-page="access"] button.reload')
    expect(page.locator("#f-JWTGATE_TOKEN_CREATOR_GROUPS")).to_have_value("ci")
    expect(page.locator("#f-JWTGATE_ALLOWED_GROUPS")).to_have_value("")

    # Both workers refused the developers' writes (each process's audit records carry its own request-id prefix).
    def refusing_workers() -> set[str]:
        rows = stored(database)
        return {r["request_id"].split("-")[0] for r in rows if r["path"] == ISSUE and r["reason"] == "read_only"}

    wait_for(lambda: len(refusing_workers()) == 2, 10, "refusals recorded by both workers")
    assert problems == []
