"""IPv6 clients are counted per network (JWTGATE_RATE_LIMIT_IPV6_PREFIX, a /64 by default), IPv4 clients per address:
whoever holds one IPv6 address usually holds its whole /64, and must not get a fresh allowance from each address."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Clock
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_jwtgate.errors import ConfigurationError
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing import KeyPair, make_app

KEY = "JWTGATE_RATE_LIMIT_IPV6_PREFIX"
SUBNET = ipaddress.ip_network("2001:db8:5:6::/64")
#: 198 addresses of one /64, spread over its whole host part.
ADDRESSES = [str(SUBNET[1 + i * (2**64 // 199)]) for i in range(198)]


@pytest.fixture
def limited(jwtgate_keys: dict[str, KeyPair], window_clock: Clock) -> Callable[..., FlaskClient]:
    """``make(**config)``: 20 failed authentications a minute per client, 3 anonymous requests a minute."""

    def make(**config: Any) -> FlaskClient:
        config.setdefault("JWTGATE_RATE_LIMIT", "3/minute")
        config.setdefault("JWTGATE_AUTH_FAILURE_LIMIT", "20/minute")
        app: Flask
        app, _ = make_app(jwtgate_keys, clock=window_clock, **config)
        return app.test_client()

    return make


def guess(client: FlaskClient, address: str, authorization: str = "Bearer not.a.token") -> TestResponse:
    return client.get("/api/items", headers={"Authorization": authorization}, environ_base={"REMOTE_ADDR": address})


def test_the_addresses_of_one_slash_64_share_one_failure_allowance(
    limited: Callable[..., FlaskClient], jwtgate_token_factory: Callable[..., str]
) -> None:
    client = limited()
    valid = f"Bearer {jwtgate_token_factory('alice')}"

    codes = [guess(client, address).status_code for address in ADDRESSES]
    blocked_valid = guess(client, str(SUBNET[2**63]), valid)
    neighbour_network = guess(client, "2001:db8:5:7::1", valid)
    ipv4 = guess(client, "192.0.2.1", valid)

    assert codes == [401] * 20 + [429] * 178
    assert blocked_valid.status_code == 429
    assert blocked_valid.get_json()["error_description"].startswith(
        "too many failed authentication attempts from this address's network (2001:db8:5:6::/64)"
    )
    assert neighbour_network.status_code == 200
    assert ipv4.status_code == 200


def test_a_slash_48_prefix_counts_a_whole_site_together(limited: Callable[..., FlaskClient]) -> None:
    client = limited(JWTGATE_RATE_LIMIT_IPV6_PREFIX=48)

    # 20 networks of one /48, one address each
    spread = [guess(client, f"2001:db8:5:{subnet:x}::1").status_code for subnet in range(1, 21)]
    same_site = guess(client, "2001:db8:5:ffff::9").status_code
    other_site = guess(client, "2001:db8:6::9").status_code

    assert spread == [401] * 20
    assert same_site == 429
    assert other_site == 401


def test_a_slash_128_prefix_counts_each_address(limited: Callable[..., FlaskClient]) -> None:
    client = limited(JWTGATE_RATE_LIMIT_IPV6_PREFIX=128)

    codes = {guess(client, address).status_code for address in ADDRESSES}
    one = [guess(client, ADDRESSES[0]).status_code for _ in range(20)]

    assert codes == {401}
    assert one == [401] * 19 + [429]


def test_ipv4_clients_are_still_counted_per_address(limited: Callable[..., FlaskClient]) -> None:
    client = limited(JWTGATE_RATE_LIMIT_IPV6_PREFIX=32)

    first = [guess(client, "192.0.2.1").status_code for _ in range(21)]
    neighbour = guess(client, "192.0.2.2").status_code
    mapped = guess(client, "::ffff:192.0.2.1").status_code  # the same client, spelt as IPv6

    assert first == [401] * 20 + [429]
    assert neighbour == 401
    assert mapped == 429


def test_anonymous_callers_of_one_slash_64_share_one_bucket(limited: Callable[..., FlaskClient]) -> None:
    client = limited()

    def status(address: str) -> TestResponse:
        return client.get("/api/status", environ_base={"REMOTE_ADDR": address})

    same_network = [status(address) for address in ADDRESSES[:4]]
    other_network = status("2001:db8:5:7::1")

    assert [r.status_code for r in same_network] == [200, 200, 200, 429]
    assert [r.headers.get("RateLimit-Remaining") for r in same_network[:3]] == ["2", "1", "0"]
    assert same_network[3].get_json()["error_description"].startswith(
        "this address's network (2001:db8:5:6::/64) has used up its rate limit"
    )
    assert other_network.status_code == 200


def test_behind_a_forwarded_proxy_ipv6_clients_are_counted_per_network(limited: Callable[..., FlaskClient]) -> None:
    client = limited(JWTGATE_PROXY_HEADER="Forwarded", JWTGATE_TRUSTED_PROXIES=["10.0.0.0/8"])

    def attempt(address: str) -> int:
        response = client.get(
            "/api/items",
            headers={"Authorization": "Bearer not.a.token", "Forwarded": f'for="[{address}]:4711";proto=https'},
            environ_base={"REMOTE_ADDR": "10.0.0.2"},
        )
        return response.status_code

    codes = [attempt(address) for address in ADDRESSES[:21]]
    other = attempt("2001:db8:5:7::1")

    assert codes == [401] * 20 + [429]
    assert other == 401


# -- the setting -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(None, 64), (32, 32), (48, 48), ("56", 56), (128, 128)], ids=repr)
def test_the_prefix_setting(value: object, expected: int) -> None:
    config = {KEY: value} if value is not None else {}
    assert Settings.from_mapping(config).rate_limit_ipv6_prefix == expected


@pytest.mark.parametrize("value", [0, 16, 31, 129, -64, 64.0, "64x", "", True, None, [64]], ids=repr)
def test_a_prefix_outside_32_to_128_stops_the_app_naming_the_key(
    jwtgate_keys: dict[str, KeyPair], value: object
) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_app(jwtgate_keys, **{KEY: value})
    assert info.value.key == KEY
    assert KEY in str(info.value)
    assert "between 32 and 128" in info.value.message


def test_check_config_shows_the_prefix(jwtgate_keys: dict[str, KeyPair]) -> None:
    app, _ = make_app(jwtgate_keys, **{KEY: 48})

    result = app.test_cli_runner().invoke(args=["jwtgate", "check-config", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rate_limit"]["ipv6_prefix"] == 48
