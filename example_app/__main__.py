"""``python -m example_app``: serve the mock Jira on embedded defaults and print tokens to try it with."""

from __future__ import annotations

import os

from flask_jwtgate.ascii_numbers import parse_whole

from . import create_app
from .directory import DEMO_PASSWORDS, demo_pat
from .idp import mint_token

DEMO = [
    ("alice", "an admin (groups jira-administrators, jwtgate-admins)"),
    ("bob", "a normal user (group jira-developers)"),
    ("carol", "a read-only user (group viewers: GET, HEAD and OPTIONS only)"),
]


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = parse_whole(os.environ.get("PORT", "5000"), max_digits=5)
    if port is None or not 0 < port < 65536:
        raise SystemExit(f"PORT must be a port number from 1 to 65535 in ASCII digits, not {os.environ['PORT']!r}")
    app = create_app()
    base = f"http://{host}:{port}"
    print(f"Example Jira, protected by flask-jwtgate, on {base}")
    print(f"(the demo identity provider's keys and the gate's database are in {app.instance_path})\n")
    print("# Paste these lines into the shell you will use curl from:")
    print(f"export JIRA={base}")
    for username, _ in DEMO:
        token = mint_token(app, username, expires_in=8 * 3600)
        print(f"export {username.upper()}_TOKEN='{token}'")
    print()
    print("curl -s $JIRA/rest/api/2/serverInfo            # public: no token needed")
    print("curl -si $JIRA/rest/api/2/myself               # 401 without a token\n")
    for username, role in DEMO:
        variable = f"{username.upper()}_TOKEN"
        print(f"# {username}: {role}")
        print(f'curl -s -H "Authorization: Bearer ${variable}" $JIRA/rest/api/2/myself')
        print(
            f'curl -si -X POST -H "Authorization: Bearer ${variable}" -H "Content-Type: application/json" '
            f"-d '{{\"fields\": {{\"summary\": \"Hello\", \"project\": {{\"key\": \"DEMO\"}}}}}}' "
            "$JIRA/rest/api/2/issue\n"
        )
    print("# The demo directory's own credentials (public demo values: keep this server to yourself)")
    print(f"curl -s -u bob:{DEMO_PASSWORDS['bob']} {base}/rest/api/2/myself        # Basic")
    print(f'curl -s -H "Authorization: Bearer {demo_pat("bob")}" {base}/rest/api/2/myself   # personal access token\n')
    print(
        "More tokens (from the repository's root): "
        ".venv/bin/flask --app example_app idp mint USERNAME [--group G] [--expires-in SECONDS]\n",
        flush=True,
    )
    app.run(host=host, port=port)


if __name__ == "__main__":
    main()
