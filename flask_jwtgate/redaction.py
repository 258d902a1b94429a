"""Secrets kept out of what the gate prints and logs: the passwords in storage, database and provider URIs.

A URI can carry a password in its userinfo (``redis://:pw@host/0``, ``postgresql+psycopg://gate:pw@db/gate``) and in
its query (``redis://host/0?password=pw``, ``postgresql://db/gate?sslpassword=pw``, ``...?client_secret=pw``).
SQLAlchemy's ``render_as_string(hide_password=True)`` masks only the first, so the gate never uses it for output:
everything it prints or logs about a URI (``flask jwtgate check-config``, log lines, ``ConfigurationError``
messages) goes through :func:`redact_uri`, and a library's error message that may quote the URI through
:func:`redact_secrets`.

A query parameter is taken for a secret when its name, percent-decoded and in any case, contains ``pass``, ``pwd``,
``secret``, ``token``, ``key``, ``auth``, ``credential`` or ``sig`` (``password``, ``passwd``, ``sslpassword``,
``client_secret``, ``access_token``, ``api_key``, ``authToken``, ``sig``, ...): masking a harmless value costs
nothing, showing a secret costs the secret.

Readers disagree about a malformed URI: with an unencoded ``@``, ``/`` or ``?`` in the password, ``urllib`` (which
redis-py uses), SQLAlchemy and a human each see a different password. So :func:`redact_uri` masks what the standard
reading finds, then checks the result against the password *every* reading would find; if any of them still shows,
it gives up on the details and shows only the scheme (``redis://***``).

::

    redact_uri("rediss://default:pw@cache:6380/0?ssl_cert_reqs=required")  # 'rediss://default:***@cache:6380/0?...'
    redact_uri("postgresql+psycopg://gate@db/gate?sslpassword=pw")        # '...?sslpassword=***'
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus, urlsplit

MASK = "***"
_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "sig")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
#: ``name=value`` anywhere in the URI, as the two kinds of query readers see it: split on ``&`` only (Python's
#: ``parse_qsl`` since 3.10, so redis-py and SQLAlchemy), or on ``&`` and ``;`` (older readers).
_PARAMETER_READINGS = (
    re.compile(r"(?:^|[?&#])([^?&=#]*)=([^&#]*)"),
    re.compile(r"(?:^|[?&;#])([^?&;=#]*)=([^&;#]*)"),
)
#: SQLAlchemy's reading of the userinfo: the password runs from the first ``:`` after the user to the first ``@``.
_SQLALCHEMY_USERINFO = re.compile(r"[^:/]*:([^@]*)@")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter called ``name`` (percent-encoded or not, any case) is taken to hold a secret."""
    decoded = unquote_plus(name).lower()
    return any(word in decoded for word in _SECRET_WORDS)


def redact_uri(uri: str) -> str:
    """``uri`` with every password masked: in its userinfo and in its query parameters.

    Never raises, whatever ``uri`` is; the result never contains a password any URI reader would find in ``uri``.
    """
    secrets = _secrets(uri)
    masked = _masked(uri)
    if not any(secret in masked for secret in secrets):
        return masked
    scheme, sep, _ = uri.partition("://")
    only_scheme = f"{scheme}://{MASK}" if sep and _SCHEME.fullmatch(scheme) else MASK
    return only_scheme if not any(secret in only_scheme for secret in secrets) else MASK


def redact_secrets(text: str, uri: str) -> str:
    """``text`` (a library's error message, say) with ``uri`` and every password in it replaced by their masked forms.

    For messages the gate passes on but did not write: ``limits`` and SQLAlchemy quote a URI they refuse whole.
    """
    text = text.replace(uri, redact_uri(uri))
    for secret in sorted(_secrets(uri), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _masked(uri: str) -> str:
    """The standard reading (RFC 3986, as ``urllib.parse`` splits it): the userinfo's password and secret query
    parameters masked, everything else as it was."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    before_query, question, query = rest.partition("?")
    authority, slash, path = before_query.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        authority = f"{user}:{MASK}@{host}" if colon else f"{userinfo}@{host}"
    if question:
        kept: list[str] = []
        masking = False
        for piece in query.split("&"):
            name, equals, _value = piece.partition("=")
            if not equals and masking:
                continue  # "password=a&b" meant as the password "a&b": the rest goes with the masked value
            # "db=0;password=pw" is one parameter to parse_qsl and two to a reader that splits on ';' as well:
            # its value is masked whole if either reading finds a secret in it.
            masking = bool(equals) and any(
                is_secret_name(part.partition("=")[0]) for part in [name, *piece.split(";")[1:]]
            )
            kept.append(f"{name}={MASK}" if masking else piece)
        query = "&".join(kept)
    return f"{scheme}{sep}{authority}{slash}{path}{question}{query}"


def _secrets(uri: str) -> set[str]:
    """Every string some reader of ``uri`` would take for a password, as written and percent-decoded."""
    _, sep, rest = uri.partition("://")
    if not sep:
        rest = uri
    found: list[str] = []
    try:
        password = urlsplit(uri).password
    except ValueError:  # an invalid port or IPv6 host: urllib reads nothing, the other readings still apply
        password = None
    if password is not None:
        found.append(password)
    userinfo, at, _ = rest.rpartition("@")  # a password with '@', '/' or '?' in it, up to the last '@'
    if at and ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    sqlalchemy = _SQLALCHEMY_USERINFO.match(rest)
    if sqlalchemy:
        found.append(sqlalchemy.group(1))
    for reading in _PARAMETER_READINGS:
        found.extend(value for name, value in reading.findall(rest) if is_secret_name(name))
    decoded = [unquote(secret) for secret in found] + [unquote_plus(secret) for secret in found]
    # An empty string or one of asterisks is in every output (the mask itself): it is no secret to hide.
    return {secret for secret in found + decoded if secret.strip("*")}
