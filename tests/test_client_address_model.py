"""The client address as a function of settings and request, checked against a small reference model.

Hypothesis generates the settings (trusted proxies, the proxy header and its spelling, the allowlist, the IPv6 prefix)
and the request (the peer, and a chain of hops written as ``X-Forwarded-For`` or as RFC 7239 ``Forwarded``, with
ports, brackets, quotes, escapes, other parameters, obfuscated ids and junk). The model says who the client is, whether
the allowlist lets it in, and which key it is counted under; the gate's own ``Gatekeeper`` (built from the settings as
the app builds it) must agree on all three.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_jwtgate.errors import AccessDenied
from flask_jwtgate.policy import Gatekeeper, View
from flask_jwtgate.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Networks the settings are drawn from; they nest and overlap so that membership is interesting.
NETWORKS = [
    "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "192.0.2.0/24", "198.51.100.0/24", "127.0.0.1/32",
    "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64", "fd00::/8", "::1/128",
]
#: Addresses are drawn from these (the last two are outside every network above).
POOLS = [ipaddress.ip_network(n) for n in NETWORKS + ["203.0.113.0/24", "2001:db9::/32"]]

#: Hops that name no address, spelt for each header: (X-Forwarded-For entry, Forwarded element).
JUNK = [
    ("garbage", "for=garbage"),
    ("unknown", "for=unknown"),
    ("_hidden", "for=_hidden"),
    ("_x.Y-1", 'for="_x.Y-1"'),
    ("", ""),  # an empty entry / an element without parameters
    (" ", "proto=https"),  # no for= at all
    ("10.1.2.3.4", "for="),
    ("256.1.2.3", "for=192.0.2.1:80"),  # a port needs quotes: ':' is not a token character
    ("fe80::1%eth0", 'for="[fe80::1%25eth0]"'),
    ("10.1.2", 'for="2001:db8::1"'),  # IPv6 needs its brackets
    ("[::1", 'for="[192.0.2.1]"'),  # brackets are for IPv6 only
    ("10.1.2.3:99:99", "for=192.0.2.1;for=192.0.2.2"),  # a parameter twice
    ("x10.1.2.3", "for=192.0.2.1;proto=ht tp"),  # a broken neighbour parameter
    ("10.1.2.3 10.1.2.4", "for = 192.0.2.1"),
    ("[2001:db8::1]x", '"for=192.0.2.1"'),
    ("::ffff:10.1.2.3%1", 'for=192.0.2.1"x"'),
]


@dataclass(frozen=True)
class Hop:
    """One proxy's record of whom it received the request from."""

    address: Address
    port: int | None
    obfuscated_port: bool
    mapped: bool  # an IPv4 address written as IPv4-mapped IPv6


@dataclass(frozen=True)
class Junk:
    xff: str
    forwarded: str


@dataclass(frozen=True)
class Unclosed:
    """A Forwarded element with a quoted string left open (in X-Forwarded-For: an entry that is not an address)."""


HopLike = Hop | Junk | Unclosed


def normalised(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def inside(address: Address, networks: list[Network]) -> bool:
    return any(address in network for network in networks)


# -- the reference model ----------------------------------------------------------------------------------------------


def model_client(
    peer: Address | None, trusted: list[Network], chain: list[HopLike], header_read: bool, spelling: str
) -> Address | None:
    """Who the client is: the peer, unless it is a trusted proxy whose header says otherwise, read right to left."""
    if peer is None:
        return None
    peer = normalised(peer)
    if not header_read or not inside(peer, trusted):
        return peer
    if spelling == "Forwarded":
        chain = forwarded_elements(chain)
        if chain is None:
            return None  # where the elements end cannot be told
    client: Address | None = None
    for hop in reversed(chain):
        if not isinstance(hop, Hop):
            return None
        client = normalised(hop.address)
        if not inside(client, trusted):
            return client
    return client  # every hop was a trusted proxy: the leftmost is the client


def forwarded_elements(chain: list[HopLike]) -> list[HopLike] | None:
    """The elements a Forwarded header splits into. A quoted string left open runs on to the next one, and the two
    with everything between become one element that names no address; one still open at the end leaves no way to
    tell where any element ends."""
    elements: list[HopLike] = []
    open_at: int | None = None
    for hop in chain:
        if isinstance(hop, Unclosed):
            if open_at is None:
                open_at = len(elements)
            else:
                del elements[open_at:]
                elements.append(Junk("", ""))
                open_at = None
                continue
        elements.append(hop)
    return elements if open_at is None else None


def model_key(client: Address | None, prefix: int) -> str:
    if client is None:
        return "unknown"
    if client.version == 4 or prefix == 128:
        return str(client)
    return str(ipaddress.ip_network(f"{client}/{prefix}", strict=False))


# -- how a hop is written ----------------------------------------------------------------------------------------------


def ip_text(hop: Hop) -> str:
    if hop.mapped and hop.address.version == 4:
        return f"::ffff:{hop.address}"
    return str(hop.address)


def xff_entry(hop: HopLike, draw: st.DrawFn) -> str:
    if isinstance(hop, Junk):
        return hop.xff
    if isinstance(hop, Unclosed):
        return '"192.0.2.1'
    text = ip_text(hop)
    v6 = ":" in text
    port = hop.port if not hop.obfuscated_port else 8080  # X-Forwarded-For has no obfuscated ports
    if v6:
        if hop.port is not None:
            text = f"[{text}]:{port}"
        elif draw(st.booleans()):
            text = f"[{text}]"
    elif hop.port is not None:
        text = f"{text}:{port}"
    return draw(st.sampled_from(["", " "])) + text + draw(st.sampled_from(["", " "]))


#: Forwarded elements with a quoted string left open; the text before the quote is well formed in the last two.
#: Any two of them, with whatever lies between, make one element that names no address.
UNCLOSED = ['for="192.0.2.1', 'host="a', 'for=192.0.2.1;by=[::1]"x', 'for=192.0.2.1;"', 'for=192.0.2.1 "x']
TOKEN_VALUES = ["https", "http", "example.com", "_proxy1", "x-y.z"]
QUOTED_VALUES = ['"a,b;c"', '"[2001:db8::9]:80"', '"sp ace"', '"semi;colon=x"', '""']
ESCAPED_QUOTE_VALUES = ['"x\\"y,z"', '"\\"\\\\"']


def quoted(text: str, draw: st.DrawFn) -> str:
    """``text`` as a quoted-string, some characters written as quoted-pairs."""
    escaped = "".join("\\" + c if draw(st.booleans()) else c for c in text) if draw(st.booleans()) else text
    return f'"{escaped}"'


def forwarded_element(hop: HopLike, draw: st.DrawFn, escaped_quotes: bool) -> str:
    if isinstance(hop, Junk):
        return hop.forwarded
    if isinstance(hop, Unclosed):
        return draw(st.sampled_from(UNCLOSED))
    node = ip_text(hop)
    if ":" in node:
        node = f"[{node}]"
    if hop.port is not None:
        node += f":_p{hop.port}" if hop.obfuscated_port else f":{hop.port}"
    value = node if ":" not in node and draw(st.booleans()) else quoted(node, draw)
    pairs = [draw(st.sampled_from(["for", "For", "FOR", "fOr"])) + "=" + value]
    values = QUOTED_VALUES + TOKEN_VALUES + (ESCAPED_QUOTE_VALUES if escaped_quotes else [])
    for name in draw(st.lists(st.sampled_from(["proto", "by", "host", "x-ext"]), unique=True, max_size=3)):
        pairs.insert(draw(st.integers(0, len(pairs))), f"{name}={draw(st.sampled_from(values))}")
    pairs += [""] * draw(st.integers(0, 1))  # an empty pair: "for=192.0.2.1;"
    separator = draw(st.sampled_from([";", "; ", " ;"]))
    return separator.join(pairs)


def render(chain: list[HopLike], spelling: str, draw: st.DrawFn) -> str:
    if spelling == "Forwarded":
        escaped_quotes = not any(isinstance(hop, Unclosed) for hop in chain)
        parts = [forwarded_element(hop, draw, escaped_quotes) for hop in chain]
    else:
        parts = [xff_entry(hop, draw) for hop in chain]
    # Several header lines arrive joined by commas (gunicorn: ",", Werkzeug: ", ").
    text = ""
    for index, part in enumerate(parts):
        text += (draw(st.sampled_from([",", ", ", " , "])) if index else "") + part
    return text


# -- strategies --------------------------------------------------------------------------------------------------------


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    pool = draw(st.sampled_from(POOLS))
    return pool[draw(st.integers(0, pool.num_addresses - 1))]


@st.composite
def hops(draw: st.DrawFn, trusted: list[Network]) -> HopLike:
    kind = draw(st.sampled_from(["hop"] * 4 + ["junk"] * 3 + ["unclosed"] * 2))
    if kind == "junk":
        xff, forwarded = draw(st.sampled_from(JUNK))
        return Junk(xff, forwarded)
    if kind == "unclosed":
        return Unclosed()
    if trusted and draw(st.booleans()):  # a proxy: the resolution reads on past it
        network = draw(st.sampled_from(trusted))
        address = network[draw(st.integers(0, network.num_addresses - 1))]
    else:
        address = draw(addresses())
    return Hop(
        address,
        draw(st.none() | st.integers(0, 65535)),
        draw(st.booleans()),
        draw(st.booleans()),
    )


networks = st.lists(st.sampled_from(NETWORKS), max_size=4, unique=True).map(
    lambda names: [ipaddress.ip_network(n) for n in names]
)


@dataclass
class Case:
    config: dict[str, Any]
    environ: dict[str, str]
    peer: Address | None
    trusted: list[Network]
    allowlist: list[Network]
    chain: list[HopLike]
    spelling: str
    header_read: bool
    prefix: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    header = draw(st.sampled_from([None, "X-Forwarded-For", "x-forwarded-for", "Forwarded", "FORWARDED"]))
    trusted = draw(networks.filter(bool)) if header else []
    allowlist = draw(networks)
    prefix = draw(st.sampled_from([32, 48, 56, 64, 128]) | st.integers(32, 128))
    spelling = "Forwarded" if header and header.lower() == "forwarded" else "X-Forwarded-For"
    chain = draw(st.lists(hops(trusted), max_size=5))
    # Peers are mostly trusted proxies, so that the header is read.
    peer_choice = draw(st.sampled_from(["trusted"] * 3 + ["any", "missing", "garbage"]))
    peer: Address | None
    if peer_choice == "trusted" and trusted:
        network = draw(st.sampled_from(trusted))
        peer = network[draw(st.integers(0, network.num_addresses - 1))]
    elif peer_choice in ("missing", "garbage"):
        peer = None
    else:
        peer = draw(addresses())
    if peer is None:
        peer_text = "" if peer_choice == "missing" else "garbage"
    elif peer.version == 4 and draw(st.booleans()):
        peer_text = f"::ffff:{peer}"
    else:
        peer_text = str(peer)
    environ = {"REMOTE_ADDR": peer_text}
    rendered = render(chain, spelling, draw)
    header_read = bool(header) and bool(rendered)
    if chain:
        environ["HTTP_FORWARDED" if spelling == "Forwarded" else "HTTP_X_FORWARDED_FOR"] = rendered
    # The other spelling, naming an allowlisted address, is never read.
    environ["HTTP_X_FORWARDED_FOR" if spelling == "Forwarded" else "HTTP_FORWARDED"] = (
        "10.1.2.3" if spelling == "Forwarded" else "for=10.1.2.3"
    )
    config: dict[str, Any] = {
        "JWTGATE_PROXY_HEADER": header,
        "JWTGATE_TRUSTED_PROXIES": [str(n) for n in trusted],
        "JWTGATE_IP_ALLOWLIST": [str(n) for n in allowlist],
        "JWTGATE_RATE_LIMIT_IPV6_PREFIX": prefix,
    }
    return Case(config, environ, peer, trusted, allowlist, chain, spelling, header_read, prefix)


# -- the property ------------------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_client_address_allowlist_and_limit_key_follow_the_model(case: Case) -> None:
    keeper = Gatekeeper(Settings.from_mapping(case.config))
    expected = model_client(case.peer, case.trusted, case.chain, case.header_read, case.spelling)
    allowed = not case.allowlist or (expected is not None and inside(expected, case.allowlist))

    client = keeper.client_of(case.environ)
    try:
        decision = keeper.check(case.environ, "GET", "/api/status", View(public=True))
    except AccessDenied as exc:
        assert exc.reason == "ip_not_allowed"
        assert exc.client == client
        verdict = False
    else:
        assert decision.client == client
        verdict = True

    assert client.address == expected
    assert str(client) == (str(expected) if expected is not None else "unknown")
    assert verdict is allowed
    assert client.allowed is allowed
    assert client.limit_key == model_key(expected, case.prefix)


# -- the model itself, on cases worked out by hand ---------------------------------------------------------------------

ip = ipaddress.ip_address
TRUSTED = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ([Hop(ip("192.0.2.1"), None, False, False)], "192.0.2.1"),
        ([Hop(ip("192.0.2.1"), 80, False, False), Hop(ip("10.0.0.2"), None, False, False)], "192.0.2.1"),
        ([Junk("x", "for=x"), Hop(ip("192.0.2.1"), None, False, False)], "192.0.2.1"),
        ([Hop(ip("192.0.2.1"), None, False, False), Junk("x", "for=x")], None),
        ([Hop(ip("10.0.0.3"), None, False, False), Hop(ip("10.0.0.2"), None, False, False)], "10.0.0.3"),
    ],
)
def test_the_model_reads_right_to_left(chain: list[HopLike], expected: str | None) -> None:
    client = model_client(ip("127.0.0.1"), TRUSTED, chain, True, "X-Forwarded-For")
    assert client == (ip(expected) if expected else None)


def test_the_model_pairs_quotes_left_open() -> None:
    hop = Hop(ip("192.0.2.1"), None, False, False)
    assert forwarded_elements([hop, Unclosed(), hop]) is None
    assert forwarded_elements([hop, Unclosed(), hop, Unclosed(), hop]) == [hop, Junk("", ""), hop]
    assert forwarded_elements([Unclosed(), Unclosed(), Unclosed()]) is None
