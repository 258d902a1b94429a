"""Numbers that come from outside: query parameters, response headers, environment variables and CLI options.

Python reads numbers far more widely than any protocol or command line means them. ``str.isdigit()`` is true of
``"²"`` and ``"①"``, which ``int()`` then refuses with a bare ``ValueError`` (a 500 where a 400 was due, a
traceback where a usage error was). ``int()`` and ``float()`` accept what no HTTP or CLI grammar does: Arabic-Indic
and fullwidth digits (``int("١٢")`` is 12), underscores (``int("1_000")``), signs and surrounding Unicode whitespace;
and ``int()`` refuses more than 4300 digits with a ``ValueError`` of its own. So every number the gate reads from
outside goes through :func:`parse_whole` or :func:`parse_decimal`: ASCII digits only, bounded in length, and
``None`` for anything else, which each caller refuses in its own terms (400 naming the parameter, a usage error, a
``ConfigurationError`` naming the key, or a JWKS provider's ``cache_ttl``).

Surrounding whitespace is the caller's to strip, where its grammar allows it (HTTP's optional whitespace is only
spaces and tabs).

::

    parse_whole("100")      # 100
    parse_whole("²")        # None
    parse_decimal("0.5")    # 0.5
"""

from __future__ import annotations

import re

#: Digits a whole number may have unless the caller says otherwise: every 18-digit number fits a signed 64-bit column.
MAX_DIGITS = 18
_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def parse_whole(text: str, *, max_digits: int = MAX_DIGITS) -> int | None:
    """The whole number ``text`` spells in 1 to ``max_digits`` ASCII digits and nothing else, or ``None``.

    :param text: the value as received (not stripped).
    :param max_digits: longer numbers are ``None``.
    """
    if len(text) > max_digits or not _WHOLE.fullmatch(text):
        return None
    return int(text)


def parse_decimal(text: str, *, max_digits: int = MAX_DIGITS) -> float | None:
    """The number ``text`` spells in ASCII digits with at most one decimal point (``"2"``, ``"0.5"``, ``".5"``),
    at most ``max_digits`` digits, or ``None``: no sign, exponent, ``inf`` or ``nan``."""
    if len(text) - ("." in text) > max_digits or not _DECIMAL.fullmatch(text):
        return None
    return float(text)
