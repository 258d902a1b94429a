"""The route memo (the path rules' classification of a method and path, remembered per Gatekeeper): callers choose the
paths, before any credential check, so the memo is bounded in bytes, not only in entries: long paths are classified
afresh and never stored."""

from __future__ import annotations

import tracemalloc

from flask_jwtgate.policy import Gatekeeper, Route
from flask_jwtgate.settings import Settings

MiB = 1024 * 1024


def keeper() -> Gatekeeper:
    return Gatekeeper(
        Settings.from_mapping(
            {
                "JWTGATE_PROTECTED_PATHS": ["/rest/**", "/admin"],
                "JWTGATE_PUBLIC_PATHS": ["/rest/open/**"],
                "JWTGATE_RESTRICTED_PUBLIC_PATHS": ["/rest/open/secret/**"],
                "JWTGATE_BYPASS_PATHS": ["/health/**"],
            }
        )
    )


def test_short_paths_are_remembered() -> None:
    k = keeper()
    assert k.route("GET", "/rest/api/2/myself") == Route(bypass=False, protected=True, public=False, restricted=False)
    assert k.route("GET", "/rest/api/2/myself").protected
    info = k._routes.cache_info()
    assert (info.currsize, info.hits) == (1, 1)


def test_distinct_long_paths_leave_the_memo_empty() -> None:
    # The hardening issue's measure: 1,500 refused requests with distinct 40 KB paths grew a process by 65 MiB; 300
    # would keep 12 MiB.
    k = keeper()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(300):
            assert k.route("GET", f"/rest/{n}/" + "x" * 40_000).protected
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert k._routes.cache_info().currsize == 0
    assert grown < 1 * MiB


def test_a_long_method_does_not_enter_the_memo_either() -> None:
    k = keeper()
    assert k.route("X" * 1000, "/rest/x").protected
    assert k._routes.cache_info().currsize == 0


def test_the_memo_is_bounded_in_bytes_when_full() -> None:
    # Filled to its entry limit with keys of the longest length it takes: the bound the policy module states.
    k = keeper()
    length = Gatekeeper.ROUTE_MEMO_MAX_KEY - len("GET")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(Gatekeeper.ROUTE_MEMO_SIZE + 1000):
            prefix = f"/rest/{n}/"
            assert k.route("GET", prefix + "x" * (length - len(prefix))).protected
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert k._routes.cache_info().currsize == Gatekeeper.ROUTE_MEMO_SIZE
    assert grown < 7 * MiB


def test_long_paths_are_classified_as_short_ones() -> None:
    k = keeper()
    long = "x" * 1000
    cases = {
        f"/rest/{long}": Route(bypass=False, protected=True, public=False, restricted=False),
        f"/other/{long}": Route(bypass=False, protected=False, public=False, restricted=False),
        f"/health/{long}": Route(bypass=True, protected=False, public=False, restricted=False),
        f"/rest/open/{long}": Route(bypass=False, protected=True, public=True, restricted=False),
        f"/rest/open/secret/{long}": Route(bypass=False, protected=True, public=True, restricted=True),
        # Escapes stay caught: '<key>' = '..\..\x' under /rest/**, and a bypass never reaches past its glob.
        f"/rest/{long}/..\\..\\..\\x": Route(bypass=False, protected=True, public=False, restricted=False),
        f"/health/{long}/../../admin": Route(bypass=False, protected=True, public=False, restricted=False),
        f"/rest/open/{long}/..%2fsecret/x": Route(bypass=False, protected=True, public=False, restricted=True),
    }
    for path, expected in cases.items():
        assert len(path) > Gatekeeper.ROUTE_MEMO_MAX_KEY
        assert k.route("GET", path) == expected, path
    assert k._routes.cache_info().currsize == 0
