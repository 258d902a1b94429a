"""Who is calling: parsing client addresses, the IP allowlist, and the proxy header read right to left from trusted
proxies only. A malformed or forged address always denies (403 ``ip_not_allowed``), never errors."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, jsonify
from werkzeug.test import TestResponse

from flask_jwtgate import JWTGate, addresses, current_identity
from flask_jwtgate.addresses import AddressResolver, parse_address, parse_networks
from flask_jwtgate.errors import ConfigurationError

ip = ipaddress.ip_address
net = ipaddress.ip_network

# -- parse_address -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("  10.1.2.3 ", "10.1.2.3"),
        ("10.1.2.3:80", "10.1.2.3"),
        ("10.1.2.3:65535", "10.1.2.3"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::1]:80", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("::FFFF:10.1.2.3", "10.1.2.3"),
        ("::ffff:a01:203", "10.1.2.3"),
        ("[::ffff:10.1.2.3]", "10.1.2.3"),
        ("[::ffff:10.1.2.3]:8080", "10.1.2.3"),
    ],
    ids=repr,
)
def test_parse_address(text: str, expected: str) -> None:
    assert parse_address(text) == ip(expected)


def test_ipv4_mapped_becomes_ipv4() -> None:
    assert isinstance(parse_address("::ffff:10.1.2.3"), ipaddress.IPv4Address)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        " ",
        "garbage",
        "unknown",
        "_hidden",
        "localhost",
        "fe80::1%eth0",
        "fe80::1%1",
        "[fe80::1%eth0]",
        "[fe80::1%eth0]:80",
        "10.1.2",
        "10.1.2.3.4",
        "256.1.2.3",
        "010.1.2.3",
        "10.1.2.3:",
        "10.1.2.3:http",
        "10.1.2.3:80:80",
        "10.1.2.3/32",
        "10.0.0.0/8",
        "[::1",
        "::1]:80",
        "[::1]:",
        "10.1.2.3 10.1.2.4",
        "for=10.1.2.3",
        "\x00",
    ],
    ids=repr,
)
def test_parse_address_refuses(text: str | None) -> None:
    assert parse_address(text) is None


# -- parse_networks ----------------------------------------------------------------------------------------------------

KEY = "JWTGATE_IP_ALLOWLIST"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:0:0/96", "0.0.0.0/0"),  # every IPv4-mapped address: every IPv4 address
        ("::ffff:10.1.2.3", "10.1.2.3/32"),
        ("::ffff:10.1.2.3/128", "10.1.2.3/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
    ids=repr,
)
def test_parse_networks(value: str, expected: str) -> None:
    assert parse_networks([value], KEY) == (net(expected),)


def test_parse_networks_accepts_tuples_and_empty() -> None:
    assert parse_networks((), KEY) == ()
    assert parse_networks(("10.0.0.0/8", "::1"), KEY) == (net("10.0.0.0/8"), net("::1/128"))


@pytest.mark.parametrize(
    "values",
    [
        "10.0.0.0/8",
        None,
        10,
        ["garbage"],
        ["10.0.0.0/33"],
        ["2001:db8::/129"],
        ["10.1.2.3/8"],
        ["2001:db8::1/32"],
        [""],
        [None],
        [167837955],
        ["10.0.0.0/8", "nope"],
    ],
    ids=repr,
)
def test_parse_networks_refuses_naming_the_key(values: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_networks(values, KEY)
    assert info.value.key == KEY


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ("10.0.0.0/8", "must be a list of addresses or CIDR ranges such as ['10.0.0.0/8'], not '10.0.0.0/8'"),
        ([None], "None is not an address or CIDR range such as '10.0.0.0/8'"),
        (["garbage"], "'garbage' is not an address or CIDR range such as '10.0.0.0/8' or '2001:db8::/32'"),
    ],
    ids=repr,
)
def test_parse_networks_says_what_is_wrong(values: object, says: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_networks(values, KEY)
    assert str(info.value) == f"{KEY}: {says}"


def test_host_bits_set_suggests_the_network() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_networks(["10.1.2.3/8"], KEY)
    assert "host bits" in info.value.message
    assert "10.0.0.0/8" in info.value.message


# -- AddressResolver ---------------------------------------------------------------------------------------------------

TRUSTED = (net("127.0.0.1/32"), net("172.16.0.0/12"), net("fd00::/8"))
ALLOWED = (net("10.0.0.0/8"), net("2001:db8::/32"))


def resolver(proxy_header: str | None = "X-Forwarded-For", allowlist: tuple[Any, ...] = ALLOWED) -> AddressResolver:
    return AddressResolver(allowlist, TRUSTED if proxy_header else (), proxy_header)


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("10.1.2.3", True),
        ("2001:db8::5", True),
        ("::ffff:10.1.2.3", True),
        ("192.0.2.1", False),
        ("2001:db9::1", False),
        (None, False),
        ("", False),
        ("garbage", False),
    ],
    ids=repr,
)
def test_peer_against_allowlist(peer: str | None, allowed: bool) -> None:
    client = resolver(None).resolve(peer, None)
    assert client.allowed is allowed


def test_empty_allowlist_allows_everyone() -> None:
    assert resolver(None, allowlist=()).resolve("192.0.2.1", None).allowed
    assert resolver(allowlist=()).resolve("127.0.0.1", "garbage").allowed


def test_no_proxy_header_ignores_the_forwarded_value() -> None:
    client = AddressResolver(ALLOWED, TRUSTED, None).resolve("127.0.0.1", "10.1.2.3")
    assert client.address == ip("127.0.0.1")
    assert not client.allowed


@pytest.mark.parametrize(
    ("peer", "forwarded", "client_address"),
    [
        ("127.0.0.1", "10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", "192.0.2.1", "192.0.2.1"),
        ("127.0.0.1", "10.1.2.3, 172.16.0.5", "10.1.2.3"),
        ("127.0.0.1", "10.1.2.3,172.16.0.5,172.16.0.6", "10.1.2.3"),
        ("127.0.0.1", "10.9.9.9, 192.0.2.1", "192.0.2.1"),  # the left entry was written by the client
        ("127.0.0.1", "garbage, 10.1.2.3", "10.1.2.3"),  # never read past the client's own entry
        ("127.0.0.1", "10.1.2.3:5555", "10.1.2.3"),
        ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("127.0.0.1", "::ffff:10.1.2.3", "10.1.2.3"),
        ("::ffff:127.0.0.1", "10.1.2.3", "10.1.2.3"),
        ("fd00::7", "10.1.2.3", "10.1.2.3"),
        ("192.0.2.1", "10.1.2.3", "192.0.2.1"),  # untrusted peer: header ignored
        ("10.1.2.3", "192.0.2.1", "10.1.2.3"),
    ],
    ids=repr,
)
def test_proxy_header_right_to_left(peer: str, forwarded: str, client_address: str) -> None:
    assert resolver().resolve(peer, forwarded).address == ip(client_address)


def test_the_resolution_keeps_what_was_sent() -> None:
    # The audit log records the peer and the proxy header as they came, beside the client they resolved to.
    client = resolver().resolve("127.0.0.1", "10.9.9.9, 10.1.2.3")
    assert (client.peer, client.forwarded_for, client.text) == ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.1.2.3")


@pytest.mark.parametrize(
    "forwarded",
    [
        "garbage",
        "unknown",
        "10.1.2.3,",
        "10.1.2.3, ",
        "10.1.2.3,,172.16.0.5",
        "10.1.2.3, unknown",
        "10.1.2.3, garbage, 172.16.0.5",
        "fe80::1%eth0",
        "10.1.2.3 172.16.0.5",
        "10.1.2.3;172.16.0.5",
        "for=10.1.2.3",
        "_hidden",
        " ",
        ",",
    ],
    ids=repr,
)
def test_malformed_forwarded_entry_makes_the_client_unknown(forwarded: str) -> None:
    client = resolver().resolve("127.0.0.1", forwarded)
    assert client.address is None
    assert not client.allowed
    assert str(client) == "unknown"


# -- through the app ---------------------------------------------------------------------------------------------------


class Api:
    def __init__(self, factory: Callable[..., tuple[Flask, JWTGate]], token: str, **config: Any) -> None:
        self.app, self.gate = factory(**config)
        self.token = token
        self.calls: list[str | None] = []
        calls = self.calls

        @self.app.route("/api/things", methods=["GET", "POST"])
        def things() -> Any:
            calls.append(current_identity.username)
            return jsonify(user=current_identity.username)

        self.client = self.app.test_client()

    def get(self, peer: str | None, forwarded: str | None = None, *, header: str = "X-Forwarded-For") -> TestResponse:
        headers = {"Authorization": f"Bearer {self.token}"}
        if forwarded is not None:
            headers[header] = forwarded
        environ = {"REMOTE_ADDR": peer} if peer is not None else {"REMOTE_ADDR": ""}
        return self.client.get("/api/things", headers=headers, environ_overrides=environ)


@pytest.fixture
def api(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_token_factory: Callable[..., str]
) -> Callable[..., Api]:
    token = jwtgate_token_factory("alice")
    return lambda **config: Api(jwtgate_app_factory, token, **config)


def assert_allowed(a: Api, response: TestResponse) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"user": "alice"}
    assert a.calls == ["alice"]


def assert_ip_denied(a: Api, response: TestResponse) -> None:
    assert response.status_code == 403, response.get_data(as_text=True)
    body = response.get_json()
    assert body["reason"] == "ip_not_allowed"
    assert body["error"] == "access_denied"
    assert body["status"] == 403
    assert a.calls == []


ALLOWLIST = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
PROXIED = {
    "JWTGATE_IP_ALLOWLIST": ["10.0.0.0/8", "2001:db8::/32"],
    "JWTGATE_PROXY_HEADER": "X-Forwarded-For",
    "JWTGATE_TRUSTED_PROXIES": ["127.0.0.1", "172.16.0.0/12", "fd00::/8"],
}


@pytest.mark.parametrize(
    "peer", ["10.1.2.3", "10.255.255.255", "2001:db8::5", "2001:DB8:0:0::5", "192.0.2.7", "::ffff:10.1.2.3"], ids=repr
)
def test_allowlisted_peer(api: Callable[..., Api], peer: str) -> None:
    a = api(JWTGATE_IP_ALLOWLIST=ALLOWLIST)
    assert_allowed(a, a.get(peer))


@pytest.mark.parametrize(
    "peer",
    ["192.0.2.8", "11.0.0.1", "2001:db9::1", "::1", "127.0.0.1", "::ffff:192.0.2.8", "garbage", "", "fe80::1%eth0"],
    ids=repr,
)
def test_peer_not_allowlisted(api: Callable[..., Api], peer: str) -> None:
    a = api(JWTGATE_IP_ALLOWLIST=ALLOWLIST)
    assert_ip_denied(a, a.get(peer))


@pytest.mark.parametrize("peer", ["10.1.2.3", "::ffff:10.1.2.3"], ids=repr)
def test_ipv4_mapped_allowlist_entry(api: Callable[..., Api], peer: str) -> None:
    a = api(JWTGATE_IP_ALLOWLIST=["::ffff:10.0.0.0/104"])
    assert_allowed(a, a.get(peer))
    a.calls.clear()
    assert_ip_denied(a, a.get("192.0.2.1"))


def test_ipv4_mapped_single_address_allowlist_entry(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_IP_ALLOWLIST=["::ffff:10.1.2.3"])
    assert_allowed(a, a.get("10.1.2.3"))


def test_forwarded_header_ignored_without_proxy_config(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_IP_ALLOWLIST=ALLOWLIST)
    assert_ip_denied(a, a.get("127.0.0.1", "10.1.2.3"))


@pytest.mark.parametrize(
    ("peer", "forwarded"),
    [
        ("127.0.0.1", "10.1.2.3"),
        ("127.0.0.1", "10.1.2.3, 172.16.0.5"),
        ("172.16.3.4", "10.1.2.3,172.16.0.5, 172.31.0.1"),
        ("127.0.0.1", "192.0.2.1, 10.1.2.3"),
        ("127.0.0.1", "garbage, 10.1.2.3"),
        ("127.0.0.1", "10.1.2.3:5555"),
        ("127.0.0.1", "[2001:db8::1]:443"),
        ("127.0.0.1", "2001:db8::1"),
        ("127.0.0.1", "::ffff:10.1.2.3"),
        ("::ffff:127.0.0.1", "10.1.2.3"),
        ("::ffff:127.0.0.1", "::ffff:10.1.2.3, ::ffff:172.16.0.5"),
        ("fd00::1", "10.1.2.3"),
    ],
    ids=repr,
)
def test_header_from_trusted_proxy_is_believed(api: Callable[..., Api], peer: str, forwarded: str) -> None:
    a = api(**PROXIED)
    assert_allowed(a, a.get(peer, forwarded))


@pytest.mark.parametrize(
    ("peer", "forwarded"),
    [
        ("192.0.2.1", "10.1.2.3"),  # spoofed by an untrusted caller
        ("192.0.2.1", "127.0.0.1, 10.1.2.3"),
        ("::ffff:192.0.2.1", "10.1.2.3"),
        ("127.0.0.1", "10.1.2.3, 192.0.2.1"),  # the client prepended an allowed address
        ("127.0.0.1", "192.0.2.1"),
        ("127.0.0.1", "10.1.2.3, 192.0.2.1, 172.16.0.5"),
    ],
    ids=repr,
)
def test_spoofed_header_is_not_believed(api: Callable[..., Api], peer: str, forwarded: str) -> None:
    a = api(**PROXIED)
    assert_ip_denied(a, a.get(peer, forwarded))


def test_untrusted_allowed_peer_is_judged_by_its_own_address(api: Callable[..., Api]) -> None:
    a = api(**PROXIED)
    assert_allowed(a, a.get("10.1.2.3", "192.0.2.1"))


@pytest.mark.parametrize(
    "forwarded",
    [
        "garbage",
        "unknown",
        "10.1.2.3,",
        "10.1.2.3, ",
        "10.1.2.3,,172.16.0.5",
        ",10.1.2.3,",
        "10.1.2.3, unknown",
        "10.1.2.3, garbage, 172.16.0.5",
        "fe80::1%eth0",
        "[fe80::1%eth0]:80",
        "10.1.2.3 172.16.0.5",
        "10.1.2.3;172.16.0.5",
        "for=10.1.2.3",
        "10.1.2.3:99:99",
        "[10.1.2.3",
        "::ffff:10.1.2.3%eth0",
        "%",
        ",",
        "\u00e9",
        "10.1.2.3" + ", 172.16.0.5" * 200 + ", x",
    ],
    ids=lambda v: repr(v)[:40],
)
def test_malformed_header_denies_never_errors(api: Callable[..., Api], forwarded: str) -> None:
    a = api(**PROXIED)
    assert_ip_denied(a, a.get("127.0.0.1", forwarded))


def test_missing_peer_is_unknown(api: Callable[..., Api]) -> None:
    a = api(**PROXIED)
    assert_ip_denied(a, a.get(None, "10.1.2.3"))


def test_a_request_without_a_peer_address_is_warned_about_once(
    api: Callable[..., Api], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server on a Unix socket gives REMOTE_ADDR = "": every caller is the client "unknown", in one shared bucket.
    monkeypatch.setattr(addresses, "_peerless_warned", False)
    a = api(**PROXIED)
    with caplog.at_level(logging.WARNING, logger="flask_jwtgate"):
        with_peer = a.get("10.1.2.3")
        assert not [r for r in caplog.records if "REMOTE_ADDR" in r.getMessage()]  # a peer: nothing to warn about
        first = a.get(None)
        second = a.get(None, "10.1.2.3")  # another resolution, not the memoised one

    warnings = [r.getMessage() for r in caplog.records if "REMOTE_ADDR" in r.getMessage()]
    assert [with_peer.status_code, first.status_code, second.status_code] == [200, 403, 403]
    # What the operator reads, and what to do about it.
    assert warnings == [
        "jwtgate: a request came without a peer address (REMOTE_ADDR is empty, as under a server listening on a Unix "
        "socket). The gate cannot tell such callers apart: each is the client 'unknown', refused by any "
        "JWTGATE_IP_ALLOWLIST, and all of them share one failed-authentication and one rate-limit bucket, so one "
        "caller's bad tokens lock out the others. Give the app the client's address: have the server listen on TCP "
        "behind the proxy and set JWTGATE_PROXY_HEADER and JWTGATE_TRUSTED_PROXIES, or, when only the proxy can "
        "reach the socket, wrap the app in werkzeug's ProxyFix (app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)) so "
        "that REMOTE_ADDR is the address the proxy saw."
    ]


def test_custom_proxy_header(api: Callable[..., Api]) -> None:
    a = api(**{**PROXIED, "JWTGATE_PROXY_HEADER": "X-Real-IP"})
    assert_allowed(a, a.get("127.0.0.1", "10.1.2.3", header="X-Real-IP"))
    a.calls.clear()
    # The configured header is the only one read: X-Forwarded-For is just another header now.
    assert_ip_denied(a, a.get("127.0.0.1", "10.1.2.3", header="X-Forwarded-For"))


def test_proxy_header_name_is_case_insensitive(api: Callable[..., Api]) -> None:
    a = api(**{**PROXIED, "JWTGATE_PROXY_HEADER": "x-forwarded-for"})
    assert_allowed(a, a.get("127.0.0.1", "10.1.2.3"))


def test_repeated_requests_are_judged_alike(api: Callable[..., Api]) -> None:
    # The resolver memoises; a cached answer for one (peer, header) must not leak to another.
    a = api(**PROXIED)
    for _ in range(3):
        assert a.get("127.0.0.1", "10.1.2.3").status_code == 200
        assert a.get("192.0.2.1", "10.1.2.3").status_code == 403
        assert a.get("127.0.0.1", "10.1.2.3, 192.0.2.1").status_code == 403


# -- start-up errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [None, []], ids=repr)
def test_proxy_header_without_trusted_proxies_fails_at_start_up(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], trusted: list[str] | None
) -> None:
    config: dict[str, Any] = {"JWTGATE_PROXY_HEADER": "X-Forwarded-For"}
    if trusted is not None:
        config["JWTGATE_TRUSTED_PROXIES"] = trusted
    with pytest.raises(ConfigurationError) as info:
        jwtgate_app_factory(**config)
    assert info.value.key == "JWTGATE_PROXY_HEADER"
    assert "JWTGATE_PROXY_HEADER" in str(info.value)
    assert "JWTGATE_TRUSTED_PROXIES" in str(info.value)


@pytest.mark.parametrize("header", [None, ""], ids=repr)
def test_trusted_proxies_without_a_proxy_header_fail_at_start_up(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], header: str | None
) -> None:
    # Without a header to read, the trusted proxies would be the client of every request they forward.
    with pytest.raises(ConfigurationError) as info:
        jwtgate_app_factory(JWTGATE_TRUSTED_PROXIES=["10.0.0.0/8"], JWTGATE_PROXY_HEADER=header)
    assert info.value.key == "JWTGATE_TRUSTED_PROXIES"
    assert "JWTGATE_TRUSTED_PROXIES" in str(info.value)
    assert "set JWTGATE_PROXY_HEADER" in info.value.message


def test_proxy_header_as_constructor_option_without_trusted_proxies(jwtgate_keys: Any) -> None:
    app = Flask("proxy_option")
    app.config["JWTGATE_PROVIDERS"] = [{"name": "test", "public_key": jwtgate_keys["rsa"].public_pem}]
    with pytest.raises(ConfigurationError) as info:
        JWTGate(app, proxy_header="X-Forwarded-For")
    assert info.value.key == "JWTGATE_PROXY_HEADER"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("JWTGATE_IP_ALLOWLIST", ["10.1.2.3/8"]),
        ("JWTGATE_IP_ALLOWLIST", ["2001:db8::1/32"]),
        ("JWTGATE_IP_ALLOWLIST", ["garbage"]),
        ("JWTGATE_IP_ALLOWLIST", "10.0.0.0/8"),
        ("JWTGATE_TRUSTED_PROXIES", ["172.16.0.1/12"]),
        ("JWTGATE_TRUSTED_PROXIES", ["proxy.internal"]),
    ],
    ids=repr,
)
def test_bad_network_fails_at_start_up_naming_the_key(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], key: str, value: object
) -> None:
    config: dict[str, Any] = {key: value}
    if key == "JWTGATE_TRUSTED_PROXIES":
        config["JWTGATE_PROXY_HEADER"] = "X-Forwarded-For"
    with pytest.raises(ConfigurationError) as info:
        jwtgate_app_factory(**config)
    assert info.value.key == key
    assert key in str(info.value)
