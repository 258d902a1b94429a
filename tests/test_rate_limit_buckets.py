"""The names of the rate-limit buckets (README, "Who is counted, and by what key"): a verified credential's
``token:<provider>:<token_id>``, an anonymous caller's ``address:<client>``, failed authentication's
``failed:<client>``; long names are hashed, so that no caller-chosen value makes a key large."""

from __future__ import annotations

import hashlib
from ipaddress import ip_address

import pytest

from flask_jwtgate.addresses import ClientAddress, limit_key
from flask_jwtgate.identity import ANONYMOUS, Identity
from flask_jwtgate.policy import Decision
from flask_jwtgate.ratelimit import (
    GateLimiter,
    LimitStore,
    RateLimitRules,
    SweptMemoryStorage,
    bucket_for,
    failure_bucket,
    parse_rules,
    storage_key,
)


def client(text: str | None) -> ClientAddress:
    address = ip_address(text) if text is not None else None
    return ClientAddress(address, text, None, True, limit_key(address))


def sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


BUCKETS = pytest.mark.parametrize(
    ("identity", "address", "bucket"),
    [
        (ANONYMOUS, "192.0.2.7", "address:192.0.2.7"),
        (ANONYMOUS, "2001:db8:5:6::1", "address:2001:db8:5:6::/64"),
        (ANONYMOUS, None, "address:unknown"),
        (Identity("alice", auth_method="jwt", token_id="jti:abc", provider="okta"), "192.0.2.7", "token:okta:jti:abc"),
        (Identity("alice", auth_method="pat", token_id="pat:0123"), "192.0.2.7", "token:pat:pat:0123"),
        (Identity("bob", auth_method="basic", token_id=None), "192.0.2.7", "user:basic:bob"),
        (Identity("bob", auth_method="basic", token_id="basic:bob"), None, "token:basic:basic:bob"),
        # The longest token id used as it is; one more character and the name is hashed.
        (Identity("a", auth_method="api_token", token_id="i" * 160), None, "token:api_token:" + "i" * 160),
        (Identity("a", auth_method="jwt", token_id="j" * 160, provider="p" * 40), None,
         "token:" + "p" * 40 + ":" + "j" * 160),  # used as it is, however long the provider's name
        (Identity("a", auth_method="basic", token_id="basic:" + "b" * 155), None, "token:basic:basic:" + "b" * 155),
        (Identity("a", auth_method="basic", token_id="basic:" + "b" * 183), None,
         sha256("token:basic:basic:" + "b" * 183)),
        (Identity("b" * 200, auth_method="basic", token_id=None), None, sha256("user:basic:" + "b" * 200)),
        (Identity("b" * 189, auth_method="basic", token_id=None), None, "user:basic:" + "b" * 189),
        (Identity("b" * 190, auth_method="basic", token_id=None), None, sha256("user:basic:" + "b" * 190)),
        # A name no codec can encode as it is still makes a bucket, never an error.
        (Identity("\ud800" * 200, auth_method="basic", token_id=None), None, sha256("user:basic:" + "\ud800" * 200)),
    ],
)  # fmt: skip


@BUCKETS
def test_each_caller_draws_from_its_documented_bucket(identity: Identity, address: str | None, bucket: str) -> None:
    assert bucket_for(identity, client(address)) == bucket


@BUCKETS
def test_a_counted_request_is_counted_in_that_bucket(identity: Identity, address: str | None, bucket: str) -> None:
    """What the limiter writes: the store's key is the documented bucket's (the limiter makes most names itself)."""
    storage = SweptMemoryStorage("jwtgate+memory://")
    rules = RateLimitRules(parse_rules("5/minute"), failures=parse_rules("3/minute"))
    limiter = GateLimiter(rules, LimitStore(storage, "memory://"))

    quota = limiter.hit(Decision(identity, client(address)))

    assert quota is not None and (quota.limit, quota.remaining) == (5, 4)
    assert dict(storage.storage) == {storage_key(bucket, rules.default[0]): 1}


def test_an_anonymous_caller_without_a_resolved_address_is_unknown() -> None:
    assert bucket_for(ANONYMOUS, None) == "address:unknown"


@pytest.mark.parametrize(
    ("address", "bucket"),
    [("192.0.2.7", "failed:192.0.2.7"), ("2001:db8:5:6::1", "failed:2001:db8:5:6::/64"), (None, "failed:unknown")],
)
def test_failed_authentication_is_counted_per_address(address: str | None, bucket: str) -> None:
    assert failure_bucket(client(address)) == bucket


def test_limits_are_parsed_shortest_window_first_each_counted_apart() -> None:
    rules = parse_rules("1000/hour;10/second;100 per 2 minutes")
    assert [(r.text, r.amount, r.expiry) for r in rules] == [
        ("10 per 1 second", 10, 1), ("100 per 2 minute", 100, 120), ("1000 per 1 hour", 1000, 3600),
    ]  # fmt: skip
    # A changed limit starts a fresh count (README): every amount and window has a key of its own.
    others = parse_rules("11/second;10/minute;10 per 2 seconds;100 per 3 minutes")
    suffixes = [r.suffix for r in (*rules, *others)]
    assert len(set(suffixes)) == len(suffixes)
    # By the window's length, not its unit.
    assert [r.expiry for r in parse_rules("10 per 2 seconds;5/second;1 per 90 minutes;2/hour")] == [1, 2, 3600, 5400]


def test_the_first_listed_group_the_caller_is_in_wins() -> None:
    default = parse_rules("10/minute")
    service = parse_rules("1000/minute")
    bulk = parse_rules("5000/minute")
    rules = RateLimitRules(default, groups=(("service", service), ("bulk", bulk)))
    assert rules.for_identity(Identity("a", frozenset({"bulk", "service"}))) == service
    assert rules.for_identity(Identity("a", frozenset({"bulk"}))) == bulk
    assert rules.for_identity(Identity("a", frozenset({"other"}))) == default
    assert rules.for_identity(ANONYMOUS) == default
