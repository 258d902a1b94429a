"""The memo of resolved client addresses is keyed by what callers send (the peer and the proxy header), so it must
stay small whatever they send: only short keys are memoised, and a long header is resolved, correctly, every time."""

from __future__ import annotations

import gc
import ipaddress
import tracemalloc

import pytest
from conftest import Clock

from flask_jwtgate.addresses import MAX_MEMO_KEY, AddressResolver
from flask_jwtgate.testing import KeyPair, make_app

net = ipaddress.ip_network
ALLOWED = (net("192.0.2.0/24"),)
TRUSTED = (net("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("header", "spell"),
    [("X-Forwarded-For", "{junk}, 192.0.2.{n}"), ("Forwarded", 'for="{junk}", for=192.0.2.{n};proto=https')],
)
def test_long_headers_are_resolved_without_the_memo(header: str, spell: str) -> None:
    resolver = AddressResolver(ALLOWED, TRUSTED, header)

    for i in range(3000):
        client = resolver.resolve("10.0.0.2", spell.format(junk=f"{i}-" + "x" * MAX_MEMO_KEY, n=i % 200))
        assert str(client) == f"192.0.2.{i % 200}"
        assert client.allowed
    outsider = spell.format(junk="y" * MAX_MEMO_KEY, n=0).replace("192.0.2.0", "203.0.113.9")
    denied = resolver.resolve("10.0.0.2", outsider)

    assert resolver.memo.cache_info().currsize == 0
    assert str(denied) == "203.0.113.9" and not denied.allowed


def test_a_long_peer_is_resolved_without_the_memo() -> None:
    # REMOTE_ADDR is the caller's choice too behind a middleware that copies it from a header (ProxyFix).
    resolver = AddressResolver(ALLOWED, (), None)

    clients = [resolver.resolve(f"192.0.2.1{' ' * (MAX_MEMO_KEY + i)}", None) for i in range(100)]

    assert {str(client) for client in clients} == {"192.0.2.1"}
    assert resolver.memo.cache_info().currsize == 0


def test_keys_up_to_max_memo_key_characters_are_memoised() -> None:
    resolver = AddressResolver(ALLOWED, TRUSTED, "X-Forwarded-For")
    peer = "10.0.0.2"
    at_limit = " " * (MAX_MEMO_KEY - len(peer) - len("192.0.2.7")) + "192.0.2.7"  # peer and header: MAX_MEMO_KEY

    assert str(resolver.resolve(peer, at_limit)) == "192.0.2.7"
    assert resolver.memo.cache_info().currsize == 1
    assert str(resolver.resolve(peer, " " + at_limit)) == "192.0.2.7"
    assert resolver.memo.cache_info().currsize == 1


def test_short_keys_are_memoised_up_to_the_cache_size() -> None:
    resolver = AddressResolver(ALLOWED, TRUSTED, "X-Forwarded-For", cache_size=64)

    first = resolver.resolve("10.0.0.2", "192.0.2.7")
    again = resolver.resolve("10.0.0.2", "192.0.2.7")
    for i in range(1000):
        resolver.resolve("10.0.0.2", f"192.0.2.{i % 250}, 10.0.{i // 250}.1")

    assert again is first
    assert resolver.memo.cache_info().currsize == 64


def test_many_long_headers_leave_the_gate_small(jwtgate_keys: dict[str, KeyPair], window_clock: Clock) -> None:
    """End to end, with the failed-authentication limit on (it resolves the address before the policy does)."""
    app, _ = make_app(
        jwtgate_keys,
        clock=window_clock,
        JWTGATE_PROXY_HEADER="X-Forwarded-For",
        JWTGATE_TRUSTED_PROXIES=["10.0.0.0/8"],
        JWTGATE_RATE_LIMIT="1000/minute",
        JWTGATE_AUTH_FAILURE_LIMIT="5/minute",
        JWTGATE_AUDIT_ENABLED=False,
    )
    client = app.test_client()

    def guess(forwarded: str) -> int:
        headers = {"Authorization": "Bearer x.y.z", "X-Forwarded-For": forwarded}
        return client.get("/api/items", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code

    guess("198.51.100.1")  # warm up: the app's first request fills what every request shares
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # Each header is 4 KB, and different: the client wrote the left part, the proxy appended what it saw.
        codes = [guess(f"{i:06d}{'x' * 4096}, 198.51.100.7") for i in range(1000)]
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    neighbour = guess("198.51.100.8")

    assert codes == [401] * 5 + [429] * 995  # every one resolved to the same client, 198.51.100.7
    assert neighbour == 401
    assert retained < 1_000_000, f"{retained} bytes kept after 1000 distinct 4 KB headers"
