"""The installed package says what it is: version, licence, authors, links, classifiers (what ``pip show`` and
package indexes display), and the repository holds the licence and the changelog those point to."""

from __future__ import annotations

import re
from importlib.metadata import metadata, version
from pathlib import Path

import flask_jwtgate

ROOT = Path(__file__).resolve().parent.parent


def test_version_comes_from_the_installed_metadata() -> None:
    assert flask_jwtgate.__version__ == version("flask-jwtgate")
    assert re.fullmatch(r"\d+\.\d+\.\d+", flask_jwtgate.__version__)


def test_metadata_names_licence_authors_links_and_classifiers() -> None:
    meta = metadata("flask-jwtgate")
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta["Author"]
    links = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Changelog", "Source", "Issues"} <= set(links)
    classifiers = set(meta.get_all("Classifier") or [])
    assert {"Framework :: Flask", "Typing :: Typed", "Topic :: Security"} <= classifiers
    assert any(c.startswith("Topic :: Internet :: WWW/HTTP") for c in classifiers)
    assert "LICENSE" in (meta.get_all("License-File") or [])


def test_the_licence_file_is_the_declared_licence() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder nor the names of its" in text


def test_the_changelog_has_the_released_version_and_what_is_unreleased() -> None:
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert any(heading.startswith(f"{flask_jwtgate.__version__} ") for heading in headings)
