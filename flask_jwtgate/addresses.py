"""Who is calling: the client address, whether it may call the API, and the key it is counted under.

Threat model (as Werkzeug's ProxyFix puts it, incoming headers can be faked). The direct peer (``REMOTE_ADDR``) is the
only address the network vouches for. The configured proxy header is read only when that peer is one of
``JWTGATE_TRUSTED_PROXIES``, and then right to left: each proxy appends the address it saw, so the rightmost entry
not itself a trusted proxy is the client. Entries further left were written by the client and are never believed.
An entry that is not an address makes the client unknown, and an unknown client is outside every allowlist: a
malformed header denies, it never errors and never falls back to a more convenient address.

Two spellings of the header are read:

- a list header such as ``X-Forwarded-For``: comma-separated addresses (``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``,
  ``[2001:db8::1]:80``);
- ``Forwarded`` (RFC 7239): comma-separated elements (several header lines arrive joined by commas), each a
  ``;``-separated list of ``name=value`` pairs with case-insensitive names and token or quoted-string values; the
  hop is the element's ``for=`` node (``192.0.2.1``, ``"192.0.2.1:4711"``, ``"[2001:db8::1]:4711"``). An element
  without exactly one ``for=``, an obfuscated node (``for=_hidden``), ``for=unknown``, an IPv6 address without its
  brackets, or any pair that is not RFC 7239 syntax makes the client unknown when the resolution reaches it. Element
  boundaries are commas outside quoted strings, so a quoted string left open anywhere makes the whole header
  unreadable: a caller that sends one makes itself unknown (refused by any allowlist, counted with the other
  unknown clients), and never anyone else.

Callers choose the header, so a resolution is memoised only when the peer and header are short (``MAX_MEMO_KEY``):
the memo's size is bounded in bytes, not only in entries, and a long header is simply parsed again.

Counting (``flask_jwtgate.ratelimit``) keys on :attr:`ClientAddress.limit_key`: an IPv4 client is counted per
address, an IPv6 client per network of ``JWTGATE_RATE_LIMIT_IPV6_PREFIX`` bits (a /64 by default), because one
subscriber is routinely given a whole /64 (or /56, /48) and can pick a fresh address in it for every request. An
IPv4-mapped IPv6 address is the IPv4 address it carries. Clients whose address cannot be determined share one key,
``unknown``; a request with no peer address at all (a server listening on a Unix socket) is such a client, and the
gate logs a warning the first time it sees one.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache

from .errors import ConfigurationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

logger = logging.getLogger("flask_jwtgate")

#: The key of every client whose address cannot be determined.
UNKNOWN = "unknown"
#: Peer and proxy header together up to this many characters are memoised; longer ones are resolved every time.
MAX_MEMO_KEY = 512
#: ``JWTGATE_RATE_LIMIT_IPV6_PREFIX``: its default and the range it may take.
DEFAULT_IPV6_PREFIX = 64
IPV6_PREFIX_RANGE = (32, 128)

# [0-9], not \d: \d is any Unicode digit ("1.2.3.4:８０"); a proxy writes ports in ASCII (ascii_numbers).
_WITH_PORT_V4 = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3}){3}):[0-9]{1,5}\Z")
_WITH_PORT_V6 = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::[0-9]{1,5})?\Z")

# RFC 7239 (with RFC 9110's token and quoted-string). Each part of the header is matched by one pattern whose
# alternatives start with different characters, so no pattern backtracks more than linearly on a hostile header.
_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
_PAIR = re.compile(
    rf'([{_TCHAR}]+)=(?:([{_TCHAR}]+)|"((?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*)")'
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
#: Text up to the next separator outside a quoted string, for "," (elements) and ";" (pairs).
_UP_TO = {sep: re.compile(rf'(?:[^"{sep}]|"(?:[^"\\]|\\.)*")*', re.DOTALL) for sep in ",;"}
#: RFC 7239 section 6: IPv4, or IPv6 in brackets; then a port or an obfuscated port.
_NODE = re.compile(r"(?:(\d{1,3}(?:\.\d{1,3}){3})|\[([0-9A-Fa-f:.]+)\])(?::(?:\d{1,5}|_[A-Za-z0-9._-]+))?\Z")


def parse_address(text: str | None) -> IPAddress | None:
    """Parse one address as a proxy or server writes it, or ``None`` if it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` and ``[::1]:80``. An IPv4-mapped IPv6 address
    (``::ffff:1.2.3.4``) becomes the IPv4 address it carries, so one client has one spelling. Zone ids are refused.
    """
    if not text:
        return None
    text = text.strip()
    match = _WITH_PORT_V4.match(text) or _WITH_PORT_V6.match(text)
    if match:
        text = match.group(1)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def parse_node(text: str | None) -> IPAddress | None:
    """Parse an RFC 7239 node (a ``for=`` value, unquoted), or ``None`` if it names no address.

    Accepts ``192.0.2.1``, ``192.0.2.1:4711``, ``[2001:db8::1]`` and ``[2001:db8::1]:4711`` (an obfuscated port such
    as ``:_p1`` too). ``unknown``, obfuscated identifiers (``_hidden``), IPv6 without brackets and anything else are
    ``None``.
    """
    match = _NODE.match(text) if text else None
    if match is None:
        return None
    bracketed = match.group(2)
    if bracketed is not None and ":" not in bracketed:  # brackets are for IPv6 only: "[192.0.2.1]" is malformed
        return None
    return parse_address(match.group(1) or bracketed)


def _split(text: str, separator: str) -> list[str] | None:
    """``text`` split at each ``separator`` outside quoted strings; ``None`` if a quoted string is left open."""
    up_to = _UP_TO[separator]
    parts = []
    start, length = 0, len(text)
    while True:
        end = up_to.match(text, start).end()  # type: ignore[union-attr]  # the pattern matches the empty string
        parts.append(text[start:end])
        if end == length:
            return parts
        if text[end] != separator:  # a quote that never closes
            return None
        start = end + 1


def forwarded_for(element: str) -> str | None:
    """The ``for=`` value of one RFC 7239 element, unquoted; ``None`` if it has none, or several, or is malformed.

    ::

        forwarded_for('for="[2001:db8::1]:4711";Proto=https')   # '[2001:db8::1]:4711'
    """
    pairs = _split(element, ";")
    if pairs is None:
        return None
    node = None
    names = set()
    for pair in pairs:
        pair = pair.strip(" \t")
        if not pair:  # the grammar allows empty pairs: "for=192.0.2.1;"
            continue
        match = _PAIR.fullmatch(pair)
        if match is None:
            return None
        name = match.group(1).lower()
        if name in names:  # "each parameter MUST NOT occur more than once per forwarded-element"
            return None
        names.add(name)
        if name == "for":
            value = match.group(2)
            node = value if value is not None else _QUOTED_PAIR.sub(r"\1", match.group(3))
    return node


def limit_key(address: IPAddress | None, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The address part of a rate-limit bucket name: the one place it is made.

    An IPv4 address is counted alone, an IPv6 address with its network of ``ipv6_prefix`` bits, an unknown client
    under :data:`UNKNOWN`.

    ::

        limit_key(ip_address("2001:db8:1:2:3:4:5:6"))   # '2001:db8:1:2::/64'
        limit_key(ip_address("192.0.2.1"))              # '192.0.2.1'
    """
    if address is None:
        return UNKNOWN
    if address.version == 4 or ipv6_prefix >= 128:
        return str(address)
    return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))


def parse_networks(values: object, key: str) -> tuple[IPNetwork, ...]:
    """Parse a list of addresses and CIDR ranges, raising :class:`ConfigurationError` naming ``key``."""
    if not isinstance(values, (list, tuple)):
        raise ConfigurationError(
            key, f"must be a list of addresses or CIDR ranges such as ['10.0.0.0/8'], not {values!r}"
        )
    networks: list[IPNetwork] = []
    for value in values:
        if not isinstance(value, str):
            raise ConfigurationError(key, f"{value!r} is not an address or CIDR range such as '10.0.0.0/8'")
        try:
            network = ipaddress.ip_network(value.strip())
        except ValueError as exc:
            try:
                loose = ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise ConfigurationError(
                    key, f"{value!r} is not an address or CIDR range such as '10.0.0.0/8' or '2001:db8::/32'"
                ) from exc
            raise ConfigurationError(key, f"{value!r} has host bits set; did you mean {loose}?") from exc
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            if mapped is not None:
                network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
        networks.append(network)
    return tuple(networks)


def _inside(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address in network for network in networks)


@dataclass(frozen=True)
class ClientAddress:
    """The resolved client: ``address`` is ``None`` when it could not be determined.

    ``limit_key`` is the address part of its rate-limit buckets (see :func:`limit_key`), made with the resolution so
    that the per-request code only reads it.
    """

    address: IPAddress | None
    peer: str | None
    forwarded_for: str | None
    allowed: bool
    limit_key: str

    def __str__(self) -> str:
        return str(self.address) if self.address is not None else UNKNOWN

    @cached_property
    def text(self) -> str | None:
        """The address as text (``None`` when unknown), made once: resolutions are cached, and the audit log reads
        it on every request."""
        return None if self.address is None else str(self.address)


class AddressResolver:
    """Resolve the client address of a request and check it against the allowlist.

    :param allowlist: networks that may call the API; empty means everyone.
    :param trusted_proxies: networks whose proxy header is believed.
    :param proxy_header: the header name, e.g. ``"X-Forwarded-For"`` (a comma-separated list of addresses) or
        ``"Forwarded"`` (RFC 7239); ``None`` to use the peer address only.
    :param cache_size: how many resolutions :attr:`memo` keeps.
    :param ipv6_prefix: ``JWTGATE_RATE_LIMIT_IPV6_PREFIX``, for :attr:`ClientAddress.limit_key`.

    ::

        resolver = AddressResolver([ip_network("10.0.0.0/8")], [ip_network("127.0.0.1/32")], "X-Forwarded-For")
        resolver.resolve("127.0.0.1", "10.1.2.3").allowed  # True
    """

    def __init__(
        self,
        allowlist: tuple[IPNetwork, ...],
        trusted_proxies: tuple[IPNetwork, ...],
        proxy_header: str | None,
        cache_size: int = 4096,
        *,
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        self.allowlist = allowlist
        self.trusted_proxies = trusted_proxies
        self.proxy_header = proxy_header
        self.ipv6_prefix = ipv6_prefix
        self._hops = self._forwarded_hops if proxy_header and proxy_header.lower() == "forwarded" else self._list_hops
        #: The memoised resolutions: the same few peers and headers repeat, and parsing them costs more than the rest
        #: of the gate. Only keys up to ``MAX_MEMO_KEY`` characters enter it, so it holds a bounded number of bytes.
        self.memo = lru_cache(maxsize=cache_size)(self._resolve)

    def resolve(self, peer: str | None, forwarded: str | None) -> ClientAddress:
        """Resolve ``peer`` (``REMOTE_ADDR``) and the proxy header's value into the client address."""
        if len(peer or "") + len(forwarded or "") <= MAX_MEMO_KEY:
            return self.memo(peer, forwarded)
        return self._resolve(peer, forwarded)

    def _resolve(self, peer: str | None, forwarded: str | None) -> ClientAddress:
        if not peer:
            _warn_peerless()
        address = parse_address(peer)
        if address is not None and forwarded and self.proxy_header and _inside(address, self.trusted_proxies):
            for address in self._hops(forwarded):
                if address is None or not _inside(address, self.trusted_proxies):
                    break
        allowed = not self.allowlist or (address is not None and _inside(address, self.allowlist))
        return ClientAddress(address, peer, forwarded, allowed, limit_key(address, self.ipv6_prefix))

    @staticmethod
    def _list_hops(value: str) -> Iterator[IPAddress | None]:
        """The addresses of a list header (``X-Forwarded-For``), right to left; ``None`` for an entry that is none."""
        for entry in reversed(value.split(",")):
            yield parse_address(entry)

    @staticmethod
    def _forwarded_hops(value: str) -> Iterator[IPAddress | None]:
        """The ``for=`` addresses of a ``Forwarded`` header, right to left; ``None`` for an element without one.

        Each element is parsed only when the resolution reaches it, as each entry of a list header is.
        """
        elements = _split(value, ",")
        if elements is None:  # where the elements end cannot be told
            yield None
            return
        for element in reversed(elements):
            yield parse_node(forwarded_for(element))


_peerless_warned = False


def _warn_peerless() -> None:
    """Warn, once per process, that a request came without a peer address (``REMOTE_ADDR`` empty)."""
    global _peerless_warned
    if _peerless_warned:
        return
    _peerless_warned = True
    logger.warning(
        "jwtgate: a request came without a peer address (REMOTE_ADDR is empty, as under a server listening on a Unix "
        "socket). The gate cannot tell such callers apart: each is the client 'unknown', refused by any "
        "JWTGATE_IP_ALLOWLIST, and all of them share one failed-authentication and one rate-limit bucket, so one "
        "caller's bad tokens lock out the others. Give the app the client's address: have the server listen on TCP "
        "behind the proxy and set JWTGATE_PROXY_HEADER and JWTGATE_TRUSTED_PROXIES, or, when only the proxy can "
        "reach the socket, wrap the app in werkzeug's ProxyFix (app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)) so "
        "that REMOTE_ADDR is the address the proxy saw."
    )
