"""What the deployed gate does while Redis, PostgreSQL or the identity provider is down, and once it is back.

Each dependency is taken away under the running stack and given back; every worker is asked each time (a worker
notices an outage, and a recovery, on its own). Throughout: never a 500, never an allow that the outage made up.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from example_app.directory import demo_pat

from .stack import API, PROPAGATION_DEADLINE, Reply, Stack, agent_name


def statuses(replies: dict[int, list[Reply]]) -> set[tuple[int, str | None]]:
    """Every (status, reason) the workers answered."""
    return {(reply.status, reply.reason) for answers in replies.values() for reply in answers}


def every_worker_recovers(stack: Stack, send: object, outage: set[tuple[int, str | None]], timeout: float) -> None:
    """Ask until every worker answers 200 again, each answer meanwhile being 200 or one of ``outage``."""
    deadline = time.monotonic() + timeout
    while True:
        replies = stack.every_worker(send)  # type: ignore[arg-type]
        seen = statuses(replies)
        assert seen <= {(200, None), *outage}, seen
        if seen == {(200, None)}:
            return
        assert time.monotonic() < deadline, (f"not every worker recovered within {timeout}s", seen, stack.logs())
        time.sleep(0.2)


def test_without_redis_counted_requests_are_refused_and_served_again_once_it_is_back(stack: Stack) -> None:
    token = stack.idp.mint_jwt("bob")

    def read(probe: str) -> Reply:
        return stack.call("GET", f"{API}/myself", token=token, probe=probe)

    def public(probe: str) -> Reply:  # anonymous callers of public paths are counted by address
        return stack.call("GET", f"{API}/serverInfo", probe=probe)

    assert statuses(stack.every_worker(read)) == {(200, None)}
    stack.redis.stop()
    try:
        outage = {(503, "rate_limit_unavailable")}
        assert statuses(stack.every_worker(read)) == outage
        assert statuses(stack.every_worker(public)) == outage
    finally:
        stack.redis.start()
    every_worker_recovers(stack, read, outage, timeout=15)
    every_worker_recovers(stack, public, outage, timeout=15)


@pytest.mark.parametrize("outage", ["refused", "hangs"])
def test_without_postgresql_api_tokens_fail_closed_and_no_audit_record_is_lost(stack: Stack, outage: str) -> None:
    """PostgreSQL refuses connections (down), or takes them and never answers (hung, or a network that drops
    everything): requests that need no database are served at once all the same."""
    agent = agent_name(f"postgresql-{outage}")
    bob = stack.idp.mint_jwt("bob")
    made = stack.call("POST", "/jwtgate/tokens", token=bob, body={"name": "e2e-outage", "expires_in_days": 1})
    assert made.status == 201, made
    api_token = made.json["token"]
    answered: list[Reply] = []

    def with_jwt(probe: str) -> Reply:
        # A short wait for the answer: a request that waits on a database that hangs would never get one.
        reply = stack.call("GET", f"{API}/myself", token=bob, probe=probe, agent=agent, timeout=10)
        answered.append(reply)
        return reply

    def with_api_token(probe: str) -> Reply:
        reply = stack.call("GET", f"{API}/myself", token=api_token, probe=probe, agent=agent, timeout=10)
        answered.append(reply)
        return reply

    assert statuses(stack.every_worker(with_api_token)) == {(200, None)}  # looked up and cached by every worker
    stack.proxy.cut() if outage == "refused" else stack.proxy.stall()
    try:
        time.sleep(PROPAGATION_DEADLINE)  # every worker has tried to read the database since, and failed
        # Settings in force and JWTs need no database: served, their audit records spooled (or queued).
        assert statuses(stack.every_worker(with_jwt)) == {(200, None)}
        # Whether an API token was revoked cannot be known for longer than the deadline: refused, never guessed.
        assert statuses(stack.every_worker(with_api_token)) == {(503, "token_store_unavailable")}
        if outage == "refused":  # the admin API needs the database: a 503 that says so
            tokens = stack.call("GET", "/jwtgate/tokens", token=bob, agent=agent)
            settings = stack.call("PUT", "/jwtgate/admin/settings", token=stack.idp.mint_jwt("alice"), agent=agent,
                                  body={"JWTGATE_READ_ONLY_GROUPS": ["viewers", "jira-developers"]})
            answered += [tokens, settings]
            assert {(tokens.status, tokens.reason), (settings.status, settings.reason)} == {
                (503, "database_unavailable")
            }
    finally:
        stack.proxy.restore() if outage == "refused" else stack.proxy.resume()
    every_worker_recovers(stack, with_api_token, {(503, "token_store_unavailable")}, timeout=15)
    assert statuses(stack.every_worker(with_jwt)) == {(200, None)}

    # Every answer a worker gave, during the outage too, has its record, once (the spools are replayed).
    rows = stack.wait_for_rows(agent, len(answered), timeout=60)
    assert Counter(row["status"] for row in rows) == Counter(reply.status for reply in answered)
    assert len({row["request_id"] for row in rows}) == len(rows)
    unchanged = stack.call("GET", "/jwtgate/admin/settings", token=stack.idp.mint_jwt("alice")).json
    assert unchanged["JWTGATE_READ_ONLY_GROUPS"] == ["viewers"]  # the refused change did not happen after all


def test_without_the_identity_provider_cached_keys_serve_and_new_keys_wait_for_it(stack: Stack) -> None:
    idp = stack.idp
    known_opaque = idp.mint_opaque("bob")
    known_kid = idp.signing_key.kid

    def jwt_read(probe: str) -> Reply:  # a new token each time, signed with a key the workers have
        return stack.call("GET", f"{API}/myself", token=idp.mint_jwt("bob", kid=known_kid), probe=probe)

    def known_opaque_read(probe: str) -> Reply:
        return stack.call("GET", f"{API}/myself", token=known_opaque, probe=probe)

    # Every worker fetches the keys, and has introspected known_opaque (cached for the provider's cache_ttl).
    assert statuses(stack.every_worker(jwt_read)) == {(200, None)}
    assert statuses(stack.every_worker(known_opaque_read)) == {(200, None)}
    new_kid = idp.rotate()
    rotated = idp.mint_jwt("bob", kid=new_kid)
    fresh_opaque = idp.mint_opaque("bob")
    idp.jwks_mode = idp.introspection_mode = "down"
    try:
        time.sleep(1.1)  # past the cooldown (1 s): a worker that wanted to fetch the keys now could
        # The cached key set and introspection answers ride out the outage; credentials of other kinds need no IdP.
        assert statuses(stack.every_worker(jwt_read)) == {(200, None)}
        assert statuses(stack.every_worker(known_opaque_read)) == {(200, None)}
        assert stack.call("GET", f"{API}/myself", token=demo_pat("bob")).status == 200
        assert stack.call("GET", f"{API}/myself", basic=("bob", "builder")).status == 200
        # What only the provider can vouch for is refused with 503.
        assert statuses(stack.every_worker(
            lambda probe: stack.call("GET", f"{API}/myself", token=rotated, probe=probe)
        )) == {(503, "keys_unavailable")}
        assert statuses(stack.every_worker(
            lambda probe: stack.call("GET", f"{API}/myself", token=fresh_opaque, probe=probe)
        )) == {(503, "introspection_unavailable")}
    finally:
        idp.jwks_mode = idp.introspection_mode = "ok"
    outage = {(503, "keys_unavailable"), (503, "introspection_unavailable")}
    every_worker_recovers(
        stack, lambda probe: stack.call("GET", f"{API}/myself", token=rotated, probe=probe), outage, timeout=15
    )
    every_worker_recovers(
        stack, lambda probe: stack.call("GET", f"{API}/myself", token=fresh_opaque, probe=probe), outage, timeout=15
    )
