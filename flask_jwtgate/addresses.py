"""Who is calling: the client address, and whether it may call the API.

Threat model (as Werkzeug's ProxyFix puts it, incoming headers can be faked). The direct peer (``REMOTE_ADDR``) is the
only address the network vouches for. The configured proxy header is read only when that peer is one of
``JWTGATE_TRUSTED_PROXIES``, and then right to left: each proxy appends the address it saw, so the rightmost entry
not itself a trusted proxy is the client. Entries further left were written by the client and are never believed.
An entry that is not an address makes the client unknown, and an unknown client is outside every allowlist: a
malformed header denies, it never errors and never falls back to a more convenient address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache

from .errors import ConfigurationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# [0-9], not \d: \d is any Unicode digit ("1.2.3.4:８０"); a proxy writes ports in ASCII (ascii_numbers).
_WITH_PORT_V4 = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3}){3}):[0-9]{1,5}\Z")
_WITH_PORT_V6 = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::[0-9]{1,5})?\Z")


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
    """The resolved client: ``address`` is ``None`` when it could not be determined."""

    address: IPAddress | None
    peer: str | None
    forwarded_for: str | None
    allowed: bool

    def __str__(self) -> str:
        return str(self.address) if self.address is not None else "unknown"

    @cached_property
    def text(self) -> str | None:
        """The address as text (``None`` when unknown), made once: resolutions are cached, and the audit log reads
        it on every request."""
        return None if self.address is None else str(self.address)


class AddressResolver:
    """Resolve the client address of a request and check it against the allowlist.

    :param allowlist: networks that may call the API; empty means everyone.
    :param trusted_proxies: networks whose proxy header is believed.
    :param proxy_header: the header name, e.g. ``"X-Forwarded-For"``; ``None`` to use the peer address only.

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
    ) -> None:
        self.allowlist = allowlist
        self.trusted_proxies = trusted_proxies
        self.proxy_header = proxy_header
        # The same few peers and headers repeat; parsing them costs more than the rest of the gate.
        self.resolve = lru_cache(maxsize=cache_size)(self._resolve)  # type: ignore[method-assign]

    def resolve(self, peer: str | None, forwarded: str | None) -> ClientAddress:
        """Resolve ``peer`` (``REMOTE_ADDR``) and the proxy header's value into the client address."""
        raise NotImplementedError  # replaced per instance by a cached ``_resolve``

    def _resolve(self, peer: str | None, forwarded: str | None) -> ClientAddress:
        address = parse_address(peer)
        if address is not None and forwarded and self.proxy_header and _inside(address, self.trusted_proxies):
            for entry in reversed(forwarded.split(",")):
                address = parse_address(entry)
                if address is None or not _inside(address, self.trusted_proxies):
                    break
        allowed = not self.allowlist or (address is not None and _inside(address, self.allowlist))
        return ClientAddress(address=address, peer=peer, forwarded_for=forwarded, allowed=allowed)
