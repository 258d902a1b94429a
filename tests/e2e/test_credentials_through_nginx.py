"""Through nginx and gunicorn: every kind of credential let in and refused, and the IP allowlist judged on the address
nginx saw, not on what the client wrote into ``X-Forwarded-For``. Each answer has its audit record in PostgreSQL."""

from __future__ import annotations

import secrets
from collections import Counter

import pytest

from example_app.directory import demo_pat

from .stack import ALLOWED, API, REFUSED, Reply, Stack, agent_name


def forged(claims_of: str, signature_of: str) -> str:
    """The header and claims of one token with the signature of another."""
    header, payload, _ = claims_of.split(".")
    return f"{header}.{payload}.{signature_of.split('.')[2]}"


def test_every_credential_kind_is_let_in_and_refused_through_nginx(stack: Stack) -> None:
    agent = agent_name("credentials")
    idp = stack.idp
    bob_jwt = idp.mint_jwt("bob")
    made = stack.call("POST", "/jwtgate/tokens", token=bob_jwt, body={"name": "e2e", "expires_in_days": 1}, agent=agent)
    assert made.status == 201, made
    revoked_opaque = idp.mint_opaque("bob")
    idp.revoke(revoked_opaque)

    def myself(**credentials: object) -> Reply:
        return stack.call("GET", f"{API}/myself", agent=agent, **credentials)  # type: ignore[arg-type]

    allowed = {
        "jwt": myself(token=bob_jwt),
        "introspection": myself(token=idp.mint_opaque("bob")),
        "api_token": myself(token=made.json["token"]),
        "pat": myself(token=demo_pat("bob")),
        "basic": myself(basic=("bob", "builder")),
    }
    for method, reply in allowed.items():
        assert reply.status == 200, (method, reply)
        assert reply.json == {"name": "bob", "groups": ["jira-developers"], "authMethod": method}, method
    public = stack.call("GET", f"{API}/serverInfo", agent=agent)
    assert public.status == 200 and public.json["serverTitle"] == "Example Jira"

    refused = {
        "forged jwt": (myself(token=forged(idp.mint_jwt("alice"), bob_jwt)), 401, "bad_signature"),
        "expired jwt": (myself(token=idp.mint_jwt("bob", expires_in=-300)), 401, "expired"),
        "inactive opaque token": (myself(token=revoked_opaque), 401, "inactive_token"),
        "unknown api token": (myself(token="jgt_" + secrets.token_urlsafe(32)), 401, "unknown_token"),
        "unknown pat": (myself(token=demo_pat("mallory")), 401, "inactive_token"),
        "wrong password": (myself(basic=("bob", "wonderland")), 401, "bad_credentials"),
        "no credentials": (myself(), 401, "missing_credentials"),
        "read-only write": (
            stack.call("POST", f"{API}/issue", token=idp.mint_jwt("carol"), body={"fields": {"summary": "x"}},
                       agent=agent),
            403,
            "read_only",
        ),
    }
    for what, (reply, status, reason) in refused.items():
        assert (reply.status, reply.reason) == (status, reason), (what, reply)
        assert reply.from_app, what  # the gate refused it, not nginx

    answers = [made, *allowed.values(), public, *(reply for reply, _, _ in refused.values())]
    rows = stack.wait_for_rows(agent, len(answers))
    assert Counter(row["status"] for row in rows) == Counter(reply.status for reply in answers)
    assert Counter(row["auth_method"] for row in rows if row["status"] < 400) == Counter(
        {"jwt": 2, "introspection": 1, "api_token": 1, "pat": 1, "basic": 1, "anonymous": 1}
    )
    assert {row["reason"] for row in rows if row["status"] >= 400} == {reason for _, _, reason in refused.values()}
    # The client nginx saw, read from its X-Forwarded-For because nginx is a trusted proxy.
    assert {(row["client_address"], row["peer_address"]) for row in rows} == {(ALLOWED, "127.0.0.1")}


SPOOFS = [None, ALLOWED, f"{ALLOWED}, 127.0.0.1", "unknown", "not an address"]


@pytest.mark.parametrize("spoof", SPOOFS, ids=["none", "allowed", "allowed-via-proxy", "unknown", "garbage"])
def test_a_client_outside_the_allowlist_is_refused_whatever_it_writes_into_x_forwarded_for(
    stack: Stack, spoof: str | None
) -> None:
    agent = agent_name("refused-client")
    token = stack.idp.mint_jwt("alice")  # an admin: no rule but the address refuses her
    headers = {"X-Forwarded-For": spoof} if spoof is not None else {}
    replies = [
        stack.call("GET", f"{API}/myself", token=token, headers=headers, source=REFUSED, agent=agent),
        stack.call("GET", f"{API}/serverInfo", headers=headers, source=REFUSED, agent=agent),  # public, not for it
        stack.call("GET", "/jwtgate/whoami", token=token, headers=headers, source=REFUSED, agent=agent),
    ]
    for reply in replies:
        assert (reply.status, reply.reason) == (403, "ip_not_allowed"), reply
        assert REFUSED in reply.json["error_description"]
    rows = stack.wait_for_rows(agent, len(replies))
    assert {(row["client_address"], row["peer_address"], row["reason"]) for row in rows} == {
        (REFUSED, "127.0.0.1", "ip_not_allowed")
    }
    chain = f"{spoof}, {REFUSED}" if spoof is not None else REFUSED
    assert {row["forwarded_for"] for row in rows} == {chain}


@pytest.mark.parametrize("spoof", [None, REFUSED, "10.1.2.3"], ids=["none", "refused", "other"])
def test_the_allowed_client_is_let_in_whatever_it_writes_into_x_forwarded_for(stack: Stack, spoof: str | None) -> None:
    agent = agent_name("allowed-client")
    headers = {"X-Forwarded-For": spoof} if spoof is not None else {}
    reply = stack.call("GET", f"{API}/myself", token=stack.idp.mint_jwt("bob"), headers=headers, agent=agent)
    assert reply.status == 200, reply
    (row,) = stack.wait_for_rows(agent, 1)
    assert (row["client_address"], row["peer_address"]) == (ALLOWED, "127.0.0.1")
