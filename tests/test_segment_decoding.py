"""A token's segments decode only from their one canonical base64url spelling, whatever the bytes.

The reference here is RFC 4648's definition, through the standard library: a segment is accepted exactly when it
decodes (base64url, padding left off) and encoding the result again gives the segment back.
"""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_jwtgate.errors import InvalidToken
from flask_jwtgate.verification import _decode_segment

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def reference(segment: str) -> bytes | None:
    """The bytes RFC 4648 gives ``segment``, if it is their canonical base64url spelling; else ``None``."""
    if any(c not in ALPHABET for c in segment):
        return None
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if base64.urlsafe_b64encode(data).rstrip(b"=").decode() == segment else None


def decoded(segment: str) -> bytes | None:
    try:
        return _decode_segment(segment, "payload")
    except InvalidToken as exc:
        assert exc.reason == "malformed_token"
        return None


@given(st.binary(max_size=64))
def test_every_canonical_spelling_decodes_to_its_bytes(data: bytes) -> None:
    assert decoded(base64.urlsafe_b64encode(data).rstrip(b"=").decode()) == data


@given(st.binary(min_size=1, max_size=64), st.sampled_from(ALPHABET))
def test_a_changed_last_character_decodes_only_if_it_is_canonical(data: bytes, last: str) -> None:
    segment = base64.urlsafe_b64encode(data).rstrip(b"=").decode()[:-1] + last
    assert decoded(segment) == reference(segment)


@given(st.text(alphabet=ALPHABET + "=+/. %\\\x00é", max_size=12))
def test_any_text_is_accepted_exactly_when_the_reference_accepts_it(segment: str) -> None:
    assert decoded(segment) == reference(segment)


@pytest.mark.parametrize("segment", ["eA", "eB", "eHk", "eHl", "eHh5"])
def test_trailing_bits(segment: str) -> None:
    assert decoded(segment) == reference(segment)
    assert (decoded(segment) is None) == (segment in {"eB", "eHl"})
