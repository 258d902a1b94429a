"""``JWTGATE_PROXY_HEADER = "Forwarded"``: RFC 7239's ``for=`` read right to left from trusted proxies, like
``X-Forwarded-For``; anything that does not name an address makes the client unknown, never someone else."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Clock
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_jwtgate.addresses import AddressResolver, forwarded_for, parse_node
from flask_jwtgate.testing import KeyPair, make_app

net = ipaddress.ip_network
TRUSTED = (net("127.0.0.1/32"), net("10.0.0.0/8"), net("2001:db8:ffff::/48"))


def resolve(header: str, peer: str = "127.0.0.1") -> str:
    return str(AddressResolver((), TRUSTED, "Forwarded").resolve(peer, header))


@pytest.mark.parametrize(
    ("header", "client"),
    [
        # RFC 7239's own examples
        ('for="_gazonk"', "unknown"),
        ('For="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
        ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
        ("for=192.0.2.43, for=10.0.0.7", "192.0.2.43"),
        # right to left, skipping trusted hops; what the client wrote further left is never read
        ("for=203.0.113.9, for=192.0.2.43, for=10.0.0.7, for=10.0.0.8", "192.0.2.43"),
        ('for=garbage, for="_x", for=192.0.2.43', "192.0.2.43"),
        ("for=10.0.0.7, for=10.0.0.8", "10.0.0.7"),  # only trusted hops: the leftmost is the client
        ('for="[2001:db8::1]", for="[2001:db8:ffff::2]:443"', "2001:db8::1"),
        # two header lines, as gunicorn (",") and Werkzeug (", ") join them
        ("for=192.0.2.43,for=10.0.0.7", "192.0.2.43"),
        ("for=192.0.2.43 ,\tfor=10.0.0.7", "192.0.2.43"),
        # parameters: any order, any case, quoted or not, separators inside quotes, empty pairs
        ("proto=https;FOR=192.0.2.43;by=_proxy", "192.0.2.43"),
        ('for="192.0.2.43"', "192.0.2.43"),
        ('for="192.0.2.43:8080"', "192.0.2.43"),
        ('for="192.0.2.43:_port1"', "192.0.2.43"),
        ('for="[2001:db8::1]:_p"', "2001:db8::1"),
        ('host="a,b;for=10.0.0.1";for=192.0.2.43', "192.0.2.43"),
        ('for=192.0.2.43;host="x\\"y,z"', "192.0.2.43"),
        ('for="192.0.2.\\43"', "192.0.2.43"),  # a quoted-pair stands for its character
        ("for=192.0.2.43;", "192.0.2.43"),
        ("for=192.0.2.43 ; proto=http", "192.0.2.43"),
        ('for="[::ffff:192.0.2.43]"', "192.0.2.43"),  # IPv4-mapped: one client, one spelling
        ('for="[2001:DB8::1]"', "2001:db8::1"),
        # two quotes the client left open pair up into one element of its own; the proxy's element is intact
        ('host="a, for=192.0.2.44, by="x, for=192.0.2.43', "192.0.2.43"),
    ],
    ids=repr,
)
def test_the_client_is_the_rightmost_untrusted_for(header: str, client: str) -> None:
    assert resolve(header) == client


@pytest.mark.parametrize(
    "header",
    [
        "for=_hidden",
        "for=unknown",
        'for="unknown:4711"',
        "proto=https",  # no for= at all
        "for=192.0.2.43;for=192.0.2.44",  # a parameter twice
        "for=192.0.2.43:80",  # a port needs quotes
        'for="2001:db8::1"',  # IPv6 needs its brackets
        "for=[2001:db8::1]",  # ... and quotes
        'for="[192.0.2.43]"',  # brackets are for IPv6 only
        'for="[fe80::1%25eth0]"',
        'for="192.0.2.43:99999x"',
        'for="192.0.2.43 "',
        "for=",
        'for=""',
        "for = 192.0.2.43",
        '"for=192.0.2.43"',
        'for=192.0.2.43"x"',
        "for=192.0.2.43;proto=ht tp",
        "for=192.0.2.43\x00",
        'for="192.0.2.43\x01"',
        "192.0.2.43",  # the X-Forwarded-For spelling
        ",",
        "for=192.0.2.43,",  # an empty element is the rightmost
        "for=192.0.2.43, , for=10.0.0.7",
        'for="192.0.2.43',  # a quoted string left open ...
        'for=192.0.2.43;host="a, for=192.0.2.44',  # ... anywhere: where the elements end cannot be told
        'host="a, for=192.0.2.44, for=10.0.0.7',
        'for=192.0.2.43;"',
        "for=192.0.2.43, for=_hidden, for=10.0.0.7",
        "for=192.0.2.43, for=garbage",
        'for="\\"192.0.2.43"',
        "for=192.0.2.43;" + "x" * 5000,
        'for="' + "\\" * 5001,
        "for=" + '"a",' * 3000,
    ],
    ids=lambda header: repr(header)[:40],
)
def test_anything_that_names_no_address_makes_the_client_unknown(header: str) -> None:
    assert resolve(header) == "unknown"


def test_the_header_is_read_only_from_a_trusted_peer() -> None:
    assert resolve("for=192.0.2.43", peer="192.0.2.99") == "192.0.2.99"
    assert resolve("for=192.0.2.43", peer="::ffff:127.0.0.1") == "192.0.2.43"


@pytest.mark.parametrize(
    ("element", "node"),
    [
        ("for=192.0.2.1", "192.0.2.1"),
        ('For="[2001:db8::1]:80";proto=https', "[2001:db8::1]:80"),
        ('by=x;for="a\\"b"', 'a"b'),
        ("proto=https", None),
        ("for=a;FOR=b", None),
        ("for=a;by", None),
        ("proto=https;;for=192.0.2.1", "192.0.2.1"),  # an empty pair is skipped, not the end of the element
        ("for=a;;FOR=b", None),
        ("for=192.0.2.1;X=1", "192.0.2.1"),  # an extension parameter of any name
        ("for=192.0.2.1;\x0bproto=https", None),  # only spaces and tabs surround a pair
    ],
    ids=repr,
)
def test_forwarded_for_reads_one_element(element: str, node: str | None) -> None:
    assert forwarded_for(element) == node


@pytest.mark.parametrize(
    ("node", "address"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:0", "192.0.2.1"),
        ("[2001:db8::1]:_x-y.z", "2001:db8::1"),
        ("_hidden", None),
        ("unknown", None),
        ("2001:db8::1", None),
        ("[192.0.2.1]", None),
        ("192.0.2.1:", None),
        (None, None),
    ],
    ids=repr,
)
def test_parse_node(node: str | None, address: str | None) -> None:
    parsed = parse_node(node)
    assert (str(parsed) if parsed is not None else None) == address


# -- through the app ---------------------------------------------------------------------------------------------------

PROXY = {"REMOTE_ADDR": "10.0.0.2"}
FORWARDED = {"JWTGATE_PROXY_HEADER": "Forwarded", "JWTGATE_TRUSTED_PROXIES": ["10.0.0.0/8"]}


@pytest.fixture
def gated(jwtgate_keys: dict[str, KeyPair], window_clock: Clock) -> Callable[..., FlaskClient]:
    def make(**config: Any) -> FlaskClient:
        app: Flask
        app, _ = make_app(jwtgate_keys, clock=window_clock, **{**FORWARDED, **config})
        return app.test_client()

    return make


def get(client: FlaskClient, forwarded: str, token: str) -> TestResponse:
    return client.get(
        "/api/items", environ_base=PROXY, headers={"Forwarded": forwarded, "Authorization": f"Bearer {token}"}
    )


def test_bad_tokens_from_one_client_do_not_block_another_behind_the_same_proxy(
    gated: Callable[..., FlaskClient], jwtgate_token_factory: Callable[..., str]
) -> None:
    client = gated(JWTGATE_RATE_LIMIT="100/minute", JWTGATE_AUTH_FAILURE_LIMIT="3/minute")
    valid = jwtgate_token_factory("alice")

    guesser = [get(client, "for=192.0.2.10;proto=https", f"x{i}.y.z").status_code for i in range(3)]
    other = get(client, 'for="[2001:db8::7]:4711";proto=https', valid)
    other_v4 = get(client, "for=192.0.2.20", valid)
    guesser_valid = get(client, "for=192.0.2.10", valid)

    assert guesser == [401, 401, 401]
    assert other.status_code == 200, other.get_json()
    assert other.get_json()["user"] == "alice"
    assert other_v4.status_code == 200
    assert guesser_valid.status_code == 429
    assert guesser_valid.get_json()["reason"] == "too_many_failed_attempts"


def test_the_allowlist_judges_the_forwarded_client(
    gated: Callable[..., FlaskClient], jwtgate_token_factory: Callable[..., str]
) -> None:
    client = gated(JWTGATE_IP_ALLOWLIST=["192.0.2.0/24", "2001:db8::/32"])
    valid = jwtgate_token_factory("alice")

    allowed = [
        get(client, header, valid)
        for header in ("for=192.0.2.10", 'for="[2001:db8::7]:4711"', "for=203.0.113.1, for=192.0.2.10;by=_p")
    ]
    denied = [
        get(client, header, valid)
        for header in (
            "for=203.0.113.1",
            "for=192.0.2.10, for=203.0.113.1",  # the client prepended an allowed address
            "for=_hidden",
            'for="2001:db8::7"',
            'for="192.0.2.10',
            "192.0.2.10",
        )
    ]
    # The other spelling is just another header now.
    xff = client.get(
        "/api/items", environ_base=PROXY, headers={"X-Forwarded-For": "192.0.2.10", "Authorization": f"Bearer {valid}"}
    )

    assert [r.status_code for r in allowed] == [200, 200, 200]
    for response in [*denied, xff]:
        assert response.status_code == 403
        assert response.get_json()["reason"] == "ip_not_allowed"
