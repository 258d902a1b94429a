"""Tests leave the instance folder as they found it.

The repository's ``instance/`` folder belongs to the developer: ``python -m example_app`` keeps its demo keys and the
gate's database there, and shows what is in that database. A test suite that wrote into it (audit rows of every test
app, tokens, settings) would show up in the demo, and in the next run. This runs the example app's own tests (a host
app's suite written with the plugin's fixtures) and the gate's tests that make the most apps, in a subprocess from
the repository's root, and compares every instance folder in the repository before and after.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The example app's suite, and gate tests that make apps of every kind: the example app's factory (test client,
#: CLI, ``python -m example_app``), and apps named after no importable module (whose instance folder is the working
#: directory's), with settings refused and accepted.
SAMPLE = ["example_app/tests", "tests/test_example_app.py", "tests/test_settings.py"]


def instance_folders() -> dict[str, str]:
    """Every file in a folder named ``instance`` in the repository (not the virtual environment), with a digest."""
    found: dict[str, str] = {}
    for folder, names, files in os.walk(ROOT):
        names[:] = [name for name in names if name not in {".git", ".venv", "__pycache__", ".hypothesis"}]
        if "instance" not in Path(folder).relative_to(ROOT).parts:
            continue
        for name in files:
            path = Path(folder, name)
            found[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_the_example_apps_tests_and_a_sample_of_the_suite_leave_the_instance_folder_alone() -> None:
    before = instance_folders()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLASK_", "JWTGATE_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SAMPLE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = instance_folders()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"the tests wrote into the instance folder: {changed}"
