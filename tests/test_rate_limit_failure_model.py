"""The rate limits as a function of settings and requests, against a small model, on memory and on Redis.

Hypothesis generates the limits (per token, and failed authentications per address) and a sequence of requests:
valid tokens, a read-only user's reads and writes, invalid tokens, requests without credentials to protected and
public paths, from two client addresses behind a trusted proxy, sent to one worker (memory storage) or to either of two
workers that share the real Redis. The model says what each answer must be:

- credentials from an address whose failures have reached the limit: 429 ``too_many_failed_attempts``, whatever the
  credentials, on any worker, counting nothing;
- a refused authentication adds one to its address's failures (401); no credentials adds nothing;
- an allowed request counts against its token's bucket (or its address's, anonymous): 429 ``rate_limited`` beyond the
  limit, with ``RateLimit-Remaining`` going down by one each time before that; a refused write counts nothing.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_jwtgate.testing import KeyPair, make_app

TokenFactory = Callable[..., str]
ADDRESSES = ("first", "second")
KINDS = ("alice reads", "carol reads", "carol writes", "invalid token", "no credentials", "anonymous, public path")
Request = tuple[int, str, str]  # worker, address, kind

#: Invalid tokens three times as often as each other kind, so that addresses reach their failure limits.
requests_strategy = st.lists(
    st.tuples(
        st.integers(0, 1), st.sampled_from(ADDRESSES), st.sampled_from((*KINDS, "invalid token", "invalid token"))
    ),
    min_size=1,
    max_size=30,
)


class Model:
    """What the gate must answer, from the counts so far."""

    def __init__(self, token_limit: int, failure_limit: int) -> None:
        self.token_limit = token_limit
        self.failure_limit = failure_limit
        self.failures: Counter[str] = Counter()
        self.used: Counter[str] = Counter()

    def answer(self, address: str, kind: str) -> tuple[int, str | None, int | None]:
        """(status, the reason of a 403 or 429, RateLimit-Remaining of an allowed request)."""
        credentials = kind not in ("no credentials", "anonymous, public path")
        if credentials and self.failures[address] >= self.failure_limit:
            return 429, "too_many_failed_attempts", None
        if kind == "invalid token":
            self.failures[address] += 1
            return 401, None, None
        if kind == "no credentials":
            return 401, None, None
        if kind == "carol writes":
            return 403, "read_only", None
        bucket = {"alice reads": "alice", "carol reads": "carol"}.get(kind, address)
        self.used[bucket] += 1
        if self.used[bucket] > self.token_limit:
            return 429, "rate_limited", None
        return 200, None, self.token_limit - self.used[bucket]


Workers = Callable[[int, int], list[FlaskClient]]


@pytest.fixture(params=["memory", "redis"])
def workers(request: pytest.FixtureRequest, jwtgate_keys: dict[str, KeyPair]) -> Workers:
    """``workers(token_limit, failure_limit)``: one worker on memory storage (it counts per process), or two that
    share the real Redis (under a key prefix of the test's own), each with its own memory. Made once per pair of
    limits; every example then uses tokens and addresses of its own, so it starts from zero counts."""
    storage: dict[str, Any] = {}
    if request.param == "redis":
        storage = {
            "JWTGATE_RATE_LIMIT_STORAGE_URI": request.getfixturevalue("redis_url"),
            "JWTGATE_RATE_LIMIT_STORAGE_OPTIONS": {"key_prefix": request.getfixturevalue("key_prefix")},
        }
    made: dict[tuple[int, int], list[FlaskClient]] = {}

    def make(token_limit: int, failure_limit: int) -> list[FlaskClient]:
        config: dict[str, Any] = {
            "JWTGATE_RATE_LIMIT": f"{token_limit}/minute",
            "JWTGATE_AUTH_FAILURE_LIMIT": f"{failure_limit}/minute",
            "JWTGATE_READ_ONLY_GROUPS": ["viewers"],
            "JWTGATE_PROXY_HEADER": "X-Forwarded-For",
            "JWTGATE_TRUSTED_PROXIES": ["10.0.0.0/8"],
            **storage,
        }
        key = (token_limit, failure_limit)
        if key not in made:
            made[key] = [make_app(jwtgate_keys, **config)[0].test_client() for _ in range(2 if storage else 1)]
        return made[key]

    return make


#: Two client addresses of its own for each example (198.18.0.0/15, a range no test uses otherwise).
_examples = itertools.count()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token_limit=st.integers(1, 5), failure_limit=st.integers(1, 4), requests=requests_strategy)
# A worker that has not seen the failures answers from the store's count (with memory storage, one worker).
@example(token_limit=3, failure_limit=1, requests=[(1, "first", "invalid token"), (0, "first", "alice reads")])
def test_the_gate_answers_as_the_model_says(
    workers: Workers,
    jwtgate_token_factory: TokenFactory,
    token_limit: int,
    failure_limit: int,
    requests: list[Request],
) -> None:
    clients = workers(token_limit, failure_limit)
    number = next(_examples)
    addresses = {name: f"198.{18 + (number >> 15)}.{(number >> 7) & 255}.{(number & 127) * 2 + i}"
                 for i, name in enumerate(ADDRESSES)}
    tokens = {"alice": jwtgate_token_factory("alice"), "carol": jwtgate_token_factory("carol", groups=["viewers"])}
    model = Model(token_limit, failure_limit)
    for worker, address, kind in requests:
        response = send(clients[worker % len(clients)], addresses[address], kind, tokens)
        status, reason, remaining = model.answer(address, kind)
        answer = (response.status_code, response.json["reason"] if response.status_code in (403, 429) else None)
        assert answer == (status, reason), (worker, address, kind)
        if remaining is not None:
            assert response.headers["RateLimit-Remaining"] == str(remaining)


def send(client: FlaskClient, address: str, kind: str, tokens: dict[str, str]) -> Any:
    headers = {"X-Forwarded-For": address}
    if kind in ("alice reads", "carol reads", "carol writes"):
        headers["Authorization"] = f"Bearer {tokens[kind.split()[0]]}"
    elif kind == "invalid token":
        headers["Authorization"] = "Bearer not-a-valid-token"
    path = "/api/status" if kind == "anonymous, public path" else "/api/items"
    method = client.post if kind == "carol writes" else client.get
    return method(path, headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.2"})
