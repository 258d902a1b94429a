"""A Redis on a Unix socket, Redis Sentinel and Redis Cluster (``redis+unix://``, ``redis+sentinel://``,
``redis+cluster://``), which limits supports: the limit is exact across workers and the failed-authentication block
holds, on servers of the test's own.

Over a Unix socket, and with Sentinel on the master that Sentinel names, the gate runs its one script: one round trip a
request, as with a plain Redis. In a cluster a script may only touch keys of one hash slot, and a bucket's counters
and an address's failure counters hash apart, so there the gate makes limits' own calls, one a counter: the failure
count (``GET``), then each of the bucket's counters (limits' ``incr_expire`` script).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis_servers import Topology, redis_cluster, redis_sentinel, redis_unix, sent_commands  # noqa: F401

from flask_jwtgate.testing import KeyPair, make_app

TokenFactory = Callable[..., str]
ATTACKER = {"REMOTE_ADDR": "198.51.100.66"}


@pytest.fixture(params=["unix", "sentinel", "cluster"])
def topology(request: pytest.FixtureRequest) -> Topology:
    fixture = {"unix": "redis_unix", "sentinel": "redis_sentinel", "cluster": "redis_cluster"}[request.param]
    found: Topology = request.getfixturevalue(fixture)
    return found


def workers(keys: dict[str, KeyPair], topology: Topology, count: int) -> list[FlaskClient]:
    """``count`` apps sharing the store, like the workers of a server, under a key prefix of their own."""
    prefix = f"jwtgate-test-{uuid.uuid4().hex}"
    config: dict[str, Any] = {
        "JWTGATE_RATE_LIMIT": "4/minute",
        "JWTGATE_AUTH_FAILURE_LIMIT": "3/minute",
        "JWTGATE_RATE_LIMIT_STORAGE_URI": topology.uri,
        "JWTGATE_RATE_LIMIT_STORAGE_OPTIONS": {"key_prefix": prefix},
    }
    return [make_app(keys, **config)[0].test_client() for _ in range(count)]


def test_the_limit_is_exact_across_workers(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, topology: Topology
) -> None:
    first, second = workers(jwtgate_keys, topology, 2)
    auth = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}

    responses = [(first, second)[i % 2].get("/api/items", headers=auth) for i in range(6)]

    assert [r.status_code for r in responses] == [200] * 4 + [429] * 2
    assert [r.headers["RateLimit-Remaining"] for r in responses[:4]] == ["3", "2", "1", "0"]
    assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in responses[4:])


def test_the_failed_authentication_block_holds_across_workers(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, topology: Topology
) -> None:
    guessed_on, other = workers(jwtgate_keys, topology, 2)
    valid = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}

    guesses = [guessed_on.get("/api/items", headers={"Authorization": f"Bearer guess{i}"}, environ_base=ATTACKER)
               for i in range(3)]
    blocked = other.get("/api/items", headers=valid, environ_base=ATTACKER)
    elsewhere = other.get("/api/items", headers=valid)

    assert [r.status_code for r in guesses] == [401] * 3
    assert blocked.status_code == 429
    assert blocked.json["reason"] == "too_many_failed_attempts"
    assert elsewhere.status_code == 200


def test_round_trips_per_allowed_request(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, topology: Topology
) -> None:
    (client,) = workers(jwtgate_keys, topology, 1)
    auth = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}
    client.get("/api/items", headers=auth)  # connections opened, scripts loaded

    with sent_commands(topology.server) as commands:
        response = client.get("/api/items", headers=auth)

    assert response.status_code == 200
    cluster = topology.uri.startswith("redis+cluster://")
    assert [sent.command for sent in commands] == (["GET", "EVALSHA"] if cluster else ["EVALSHA"])
