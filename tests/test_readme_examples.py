"""The README's examples, run as a new user runs them: from a fresh clone, after the quick start.

Every ``sh`` and ``python`` block in the README carries an HTML comment on the line before it that says how it is
run here (the README's "Contributing" section lists them): ``run`` blocks go to bash, one after the other, in the
shell a user would have, with the ``export`` lines that ``python -m example_app`` printed; ``server`` blocks start a
second app; ``python-app``, ``config`` and ``pytest`` blocks run as Python; ``skip`` blocks say why they cannot run in
CI. A block without a comment fails the first test, so no example escapes.

The shell runs in a copy of a fresh clone: a temporary folder with ``.venv/bin/python`` and ``.venv/bin/flask`` (the
interpreter running these tests) and an ``instance/`` folder of its own, which the example app is pointed at with
``JWTGATE_EXAMPLE_INSTANCE_PATH``; the repository's own ``instance/`` is never touched. Ports are free ones: the
quick start's app gets one through ``PORT`` (which the README documents), and a ``server on port N`` block's N is
replaced by another in every block, as its comment says.

Each command must exit with 0, or with the status its ``# exit N`` comment gives, and print the ``# ...`` lines that
follow it in the README, in order, with whitespace ignored and ``...`` standing for anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import free_port, service_missing

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: The block languages that are examples: each needs a marker.
EXAMPLE_LANGUAGES = {"sh", "bash", "shell", "console", "python", "py", "sql"}
KINDS = {"run", "server", "output", "python-app", "config", "pytest", "sql", "skip"}
_MARKER = re.compile(r"^<!-- example: (?P<kind>[a-z-]+)(?P<rest>.*?)\s*-->$")
_EXIT = re.compile(r"#\s*exit (\d+)\s*$")
_STATUS_LINE = "@@readme-example-status@@"


@dataclass
class Command:
    """One shell command of a block (continuation lines joined), what it must print, and its exit status."""

    source: str
    expected: list[str] = field(default_factory=list)
    status: int = 0


@dataclass
class Block:
    """A fenced block of the README."""

    line: int  # 1-based line of the opening fence
    language: str
    text: str
    kind: str | None = None
    argument: str = ""

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"

    def commands(self) -> list[Command]:
        """The block's commands; a comment right after a command (no blank line between) is its expected output."""
        commands: list[Command] = []
        lines = self.text.split("\n")
        index, output_open = 0, False
        while index < len(lines):
            line = lines[index]
            index += 1
            if not line.strip():
                output_open = False
            elif line.lstrip().startswith("#"):
                if output_open:
                    commands[-1].expected.append(line.lstrip()[1:].strip())
            else:
                source = [line]
                while source[-1].endswith("\\") and index < len(lines):
                    source.append(lines[index])
                    index += 1
                status = _EXIT.search(source[-1])
                commands.append(Command("\n".join(source), status=int(status.group(1)) if status else 0))
                output_open = True
        return commands


def read_blocks(text: str) -> list[Block]:
    """Every fenced block, with the ``<!-- example: ... -->`` comment on the line before it, if any."""
    blocks: list[Block] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            language = line[3:].strip()
            end = lines.index("```", index + 1)
            block = Block(index + 1, language, "\n".join(lines[index + 1 : end]))
            marker = _MARKER.match(lines[index - 1]) if index else None
            if marker:
                block.kind = marker.group("kind")
                block.argument = marker.group("rest").strip()
            blocks.append(block)
            index = end + 1
        else:
            index += 1
    return blocks


BLOCKS = read_blocks(README.read_text())
SHELL_BLOCKS = [block for block in BLOCKS if block.kind in ("run", "server")]


def _server_port(block: Block) -> int:
    found = re.match(r"on port (\d+)\b", block.argument)
    assert found, f"{block.id}: a server block says 'on port N'"
    return int(found.group(1))


# -- the markers ------------------------------------------------------------------------------------------------------


def test_every_example_says_how_it_is_tested() -> None:
    unmarked = [b.id for b in BLOCKS if b.language in EXAMPLE_LANGUAGES and b.kind is None]
    assert not unmarked, f"README blocks without an <!-- example: ... --> comment before them: {unmarked}"
    unknown = [(b.id, b.kind) for b in BLOCKS if b.kind is not None and b.kind not in KINDS]
    assert not unknown, f"unknown example kinds {unknown}; known: {sorted(KINDS)}"
    unexplained = [b.id for b in BLOCKS if b.kind == "skip" and not re.fullmatch(r"\(.+\)", b.argument)]
    assert not unexplained, f"a skipped example says why, in parentheses: {unexplained}"
    markers = len(re.findall(r"^<!-- example:", README.read_text(), re.MULTILINE))
    assert markers == sum(b.kind is not None for b in BLOCKS), "an <!-- example --> comment is not right before a block"


def test_outputs_follow_a_command() -> None:
    for index, block in enumerate(BLOCKS):
        if block.kind == "output":
            assert index and BLOCKS[index - 1].kind == "run", f"{block.id}: an output block follows a run block"


def test_the_quick_start_runs_the_example_app_and_the_suite() -> None:
    # The README test starts the quick start's first line's last command itself; .ci/run runs the second line's.
    quick_start = next(b for b in BLOCKS if b.text.startswith("python3 -m venv --upgrade-deps .venv"))
    first, second = quick_start.text.split("\n")
    assert first.endswith("&& .venv/bin/python -m example_app")
    assert second.endswith("&& .venv/bin/python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\.venv/bin/python -m pytest$", ci, re.MULTILINE), ".ci/run runs the README's test command"


def test_the_docs_link_only_within_the_repository() -> None:
    documents = [README, *sorted((ROOT / "docs").glob("*.md"))]
    assert len(documents) > 1, "docs/ holds the architecture page"
    for document in documents:
        text = document.read_text()
        assert "../shared" not in text, f"{document.name} links outside the repository"
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (document.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{document.name} links to {target}, not in the repo"


# -- the shell examples, against live example apps ------------------------------------------------------------------


@dataclass
class Clone:
    """A copy of a fresh clone after the quick start, and the servers started in it."""

    folder: Path
    env: dict[str, str]
    exports: str = ""
    ports: dict[int, int] = field(default_factory=dict)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def localise(self, text: str) -> str:
        """The README's ports replaced by the free ones the test chose (``server on port N`` says which)."""
        for shown, port in self.ports.items():
            text = re.sub(rf"(?<=127\.0\.0\.1:){shown}\b|(?<=PORT=){shown}\b", str(port), text)
        return text

    def start(self, command: str, name: str, port: int) -> str:
        """Start ``command`` with bash in the background; wait until ``port`` answers; return what it printed."""
        log = self.folder / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                ["bash", "-c", self.exports + command],
                cwd=self.folder,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with everything it started
            )
        self.servers.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()}", pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    if "More tokens" in log.read_text():
                        return log.read_text()
            except OSError:
                pass
            time.sleep(0.1)  # bounded polling until the server listens, not a timed assertion
        pytest.fail(f"{name} did not start serving on {port}:\n{log.read_text()}", pytrace=False)

    def stop(self) -> None:
        for process in self.servers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def _wrapper(path: Path, *arguments: str) -> None:
    path.write_text(f'#!/bin/sh\nexec {" ".join(arguments)} "$@"\n')
    path.chmod(0o755)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clone]:
    """A fresh clone after the quick start, with ``.venv/bin/python -m example_app`` running on a free port."""
    for tool in ("bash", "curl"):
        if shutil.which(tool) is None:
            service_missing(tool, "the README's shell examples need it on the PATH")
    folder = tmp_path_factory.mktemp("clone")
    bin_folder = folder / ".venv" / "bin"
    bin_folder.mkdir(parents=True)
    _wrapper(bin_folder / "python", sys.executable)
    _wrapper(bin_folder / "flask", sys.executable, "-m", "flask")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLASK_", "JWTGATE_"))}
    env.update(
        PYTHONUNBUFFERED="1",
        JWTGATE_EXAMPLE_INSTANCE_PATH=str(folder / "instance"),
        # The README's audit examples read records of requests made a moment before: written before each response.
        FLASK_JWTGATE_AUDIT_SYNC="true",
    )
    ports = {_server_port(block): free_port() for block in SHELL_BLOCKS if block.kind == "server"}
    port = free_port()
    session = Clone(folder, env={**env, "PORT": str(port)}, ports=ports)
    try:
        printed = session.start(".venv/bin/python -m example_app", "example-app", port)
        session.env = env  # PORT was for the quick start's app only
        exports = re.findall(r"^export [A-Z_]+=.*$", printed, re.MULTILINE)
        assert f"export JIRA=http://127.0.0.1:{port}" in exports, printed
        session.exports = "\n".join(exports) + "\n"
        yield session
    finally:
        session.stop()


def _pattern(expected: str) -> re.Pattern[str]:
    """An expected output line as a pattern: whitespace ignored, ``...`` for anything, and ``, ...`` for "and maybe
    more" (``[{...}, ...]`` is a list of one or more)."""
    pieces = re.split(r"(,?\.\.\.)", re.sub(r"\s+", "", expected))
    wildcards = {",...": "(?:,.*?)?", "...": ".*?"}
    return re.compile("".join(wildcards.get(piece) or re.escape(piece) for piece in pieces), re.DOTALL)


def check_output(block: Block, command: Command, output: str) -> None:
    compact = re.sub(r"\s+", "", output)
    position = 0
    for expected in command.expected:
        found = _pattern(expected).search(compact, position)
        assert found, (
            f"{block.id}: the command\n{textwrap.indent(command.source, '    ')}\nprinted\n"
            f"{textwrap.indent(output, '    ')}\nwhich lacks (in order) the line\n    {expected}"
        )
        position = found.end()


def run_block(clone: Clone, block: Block, commands: list[Command]) -> None:
    script = ["exec 2>&1", clone.exports]
    for command in commands:
        script += [clone.localise(command.source), f"printf '\\n{_STATUS_LINE} %s\\n' \"$?\""]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=clone.folder, env=clone.env, capture_output=True, text=True, timeout=300
    )
    pieces = re.split(rf"\n{_STATUS_LINE} (\d+)\n", result.stdout)
    assert len(pieces) == 2 * len(commands) + 1, f"{block.id}: the script stopped early:\n{result.stdout}"
    for number, command in enumerate(commands):
        output, status = pieces[2 * number], int(pieces[2 * number + 1])
        assert status == command.status, (
            f"{block.id}: the command\n{textwrap.indent(command.source, '    ')}\nexited with {status}, not "
            f"{command.status}; it printed\n{textwrap.indent(output, '    ')}"
        )
        check_output(block, command, output)


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[block.id for block in SHELL_BLOCKS])
def test_shell_example(clone: Clone, block: Block) -> None:
    if block.kind == "server":
        [command] = block.commands()
        port = clone.ports[_server_port(block)]
        clone.start(clone.localise(command.source), f"server-{block.line}", port)
        return
    commands = block.commands()
    following = BLOCKS[BLOCKS.index(block) + 1]
    if following.kind == "output":
        commands[-1].expected = [line for line in following.text.split("\n") if line.strip()]
    run_block(clone, block, commands)


# -- the Python examples ----------------------------------------------------------------------------------------------


def _python(folder: Path, script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("FLASK_", "JWTGATE_"))}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", script], cwd=folder, env=environment, capture_output=True, text=True, timeout=120
    )


def test_the_first_snippet(tmp_path: Path) -> None:
    # Written to app.py as it stands, with the provider's public key where it says; then requests, and the
    # environment overriding a setting (FLASK_JWTGATE_* reaches the gate through from_prefixed_env()).
    [block] = [b for b in BLOCKS if b.kind == "python-app"]
    (tmp_path / "app.py").write_text(block.text)
    check = textwrap.dedent(
        """
        from flask_jwtgate.testing import generate_keys, make_token
        from pathlib import Path

        keys = generate_keys()
        Path("idp-public.pem").write_text(keys["rsa"].public_pem)
        from app import app

        def token(user, **options):
            return make_token(keys, user, issuer="https://idp.example.com", audience="my-api", **options)

        client = app.test_client()
        assert client.get("/status").get_json() == {"ok": True}
        assert client.get("/me").status_code == 401
        answer = client.get("/me", headers={"Authorization": f"Bearer {token('carol')}"})
        assert answer.get_json() == {"user": "carol", "groups": ["viewers"]}, answer.get_json()
        wrong = make_token(keys, "carol", issuer="https://idp.example.com", audience="another-api")
        assert client.get("/me", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        assert app.config["JWTGATE_ADMIN_GROUPS"] == ["ops"]
        print("checked")
        """
    )
    result = _python(tmp_path, check, {"FLASK_JWTGATE_ADMIN_GROUPS": '["ops"]'})
    assert result.returncode == 0 and result.stdout.strip() == "checked", result.stderr


CONFIG_BLOCKS = [block for block in BLOCKS if block.kind == "config"]


@pytest.mark.parametrize("block", CONFIG_BLOCKS, ids=[block.id for block in CONFIG_BLOCKS])
def test_configuration_example(tmp_path: Path, block: Block) -> None:
    # Run on a new testing app (as at the top of a host's module), then the gate starts on it unless the example
    # started one: a setting the gate refuses raises ConfigurationError here.
    secrets = {name: "a-secret-from-the-environment" for name in re.findall(r'os\.environ\["(\w+)"\]', block.text)}
    script = "\n".join(
        [
            "import os",
            "from flask import Flask",
            "from flask_jwtgate import JWTGate",
            'app = Flask("readme_example")',
            'app.config["TESTING"] = True',
            block.text,
            'if "jwtgate" not in app.extensions:',
            "    JWTGate(app)",
            "print(len(app.extensions['jwtgate'].settings.providers))",
        ]
    )
    result = _python(tmp_path, script, secrets)
    assert result.returncode == 0, f"{block.id}:\n{result.stderr}"


def test_the_testing_examples_pass_as_a_host_projects_tests(tmp_path: Path) -> None:
    # The README's conftest.py and test files, in a project of their own, run with the installed plugin.
    files = [block for block in BLOCKS if block.kind == "pytest"]
    for block in files:
        name = block.argument
        assert re.fullmatch(r"(conftest|test_\w+)\.py", name), f"{block.id}: 'pytest FILE' names a file"
        assert not (tmp_path / name).exists(), f"{block.id}: {name} is written twice"
        (tmp_path / name).write_text(block.text + "\n")
    tests = sum(len(re.findall(r"^def test_", block.text, re.MULTILINE)) for block in files)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", str(tmp_path)],
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if not key.startswith(("FLASK_", "JWTGATE_"))},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{tests} passed" in result.stdout, result.stdout


def test_a_json_answer_in_the_readme_is_json() -> None:
    # The json blocks (a token's claims) are shown as a provider sends them.
    for block in BLOCKS:
        if block.language == "json":
            json.loads(block.text)
