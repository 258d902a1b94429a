"""Three gunicorn workers behind nginx act as one gate: a rate limit counted once across them (in Redis), and a settings
change or a revocation made through one worker in force in every worker within 2 seconds (through PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from .stack import API, LIMITED_GROUP, LIMITED_RATE, PROPAGATION_DEADLINE, Reply, Stack, agent_name

SETTINGS = "/jwtgate/admin/settings"
ISSUE = {"fields": {"summary": "e2e", "project": {"key": "DEMO"}}}


def test_a_rate_limit_is_exact_across_the_workers(stack: Stack) -> None:
    token = stack.idp.mint_jwt("bob", groups=[LIMITED_GROUP])
    probes = [uuid.uuid4().hex for _ in range(2 * LIMITED_RATE)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(lambda probe: stack.call("GET", f"{API}/myself", token=token, probe=probe), probes))

    assert Counter(reply.status for reply in replies) == {200: LIMITED_RATE, 429: LIMITED_RATE}, replies
    passed = [reply for reply in replies if reply.status == 200]
    assert sorted(int(reply.headers["ratelimit-remaining"]) for reply in passed) == list(range(LIMITED_RATE))
    refused = [reply for reply in replies if reply.status == 429]
    assert {reply.reason for reply in refused} == {"rate_limited"}
    assert all(1 <= int(reply.headers["retry-after"]) <= 60 for reply in refused)
    served = stack.app.served_by(probes)
    assert len(set(served.values())) >= 2, "one worker served every request: the count was not shared"


def put_settings(stack: Stack, admin: str, **changes: object) -> Reply:
    reply = stack.call("PUT", SETTINGS, token=admin, body=changes)
    assert reply.status == 200, reply
    return reply


def test_a_settings_change_is_in_force_in_every_worker_within_two_seconds(stack: Stack) -> None:
    admin, bob = stack.idp.mint_jwt("alice"), stack.idp.mint_jwt("bob")

    def write(probe: str) -> Reply:
        return stack.call("POST", f"{API}/issue", token=bob, body=ISSUE, probe=probe)

    before = stack.every_worker(write)
    assert {reply.status for replies in before.values() for reply in replies} == {201}
    base = stack.call("GET", SETTINGS, token=admin).json["version"]
    put_settings(stack, admin, JWTGATE_READ_ONLY_GROUPS=["viewers", "jira-developers"])
    changed_at = time.monotonic()
    try:
        time.sleep(PROPAGATION_DEADLINE)  # the deadline under test: every worker must have the change by now
        after = stack.every_worker(write)
        elapsed = time.monotonic() - changed_at
    finally:
        reverted = stack.call("POST", f"{SETTINGS}/revert", token=admin, body={"version": base})
        assert reverted.status == 200, reverted
        time.sleep(PROPAGATION_DEADLINE)  # the other tests see the stack's own settings again
    assert {(reply.status, reply.reason) for replies in after.values() for reply in replies} == {(403, "read_only")}
    assert elapsed < PROPAGATION_DEADLINE + 30


def test_a_revocation_is_in_force_in_every_worker_within_two_seconds(stack: Stack) -> None:
    agent = agent_name("revocation")
    bob = stack.idp.mint_jwt("bob")
    made = stack.call("POST", "/jwtgate/tokens", token=bob, body={"name": "e2e-revoked", "expires_in_days": 1})
    assert made.status == 201, made
    secret, token_id = made.json["token"], made.json["id"]

    def read(probe: str) -> Reply:
        return stack.call("GET", f"{API}/myself", token=secret, probe=probe, agent=agent)

    before = stack.every_worker(read)  # every worker has looked the token up, and keeps it in its cache
    assert {reply.status for replies in before.values() for reply in replies} == {200}
    revoked = stack.call("DELETE", f"/jwtgate/tokens/{token_id}", token=bob)
    assert revoked.status == 204, revoked
    time.sleep(PROPAGATION_DEADLINE)  # the deadline under test
    after = stack.every_worker(read)
    assert {(reply.status, reply.reason) for replies in after.values() for reply in replies} == {(401, "revoked")}
    rows = stack.wait_for_rows(agent, sum(map(len, before.values())) + sum(map(len, after.values())))
    assert Counter(row["reason"] for row in rows) == {
        "authenticated": sum(map(len, before.values())),
        "revoked": sum(map(len, after.values())),
    }
