"""The repository documents itself: nothing it tracks points outside it.

A user who clones Herald has only the repository, so no tracked text file may name the
team's notes that lived beside it (`../shared`, `/work/shared`, `DESIGN.md`,
`api-contract.md`; the project's own are docs/design.md and docs/api.md), and every
relative link of README.md and docs/*.md must resolve to a file or directory in the
repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Case-sensitive: docs/design.md is the repository's own, DESIGN.md was the outside note.
OUTSIDE = re.compile(r"(?:\.\.|/work)/shared|DESIGN\.md|api-contract\.md")
# [text](target) and ![alt](target); the target up to a space (a title) or the parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?[^)]*\)")
EXTERNAL = ("http://", "https://", "mailto:", "#")


def _tracked() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name]


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary (an image, a jar) or a file not checked out."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_tracked_file_points_outside_the_repository() -> None:
    this_file = Path(__file__).resolve()
    found = []
    for path in _tracked():
        text = _text(path)
        if text is None or path.resolve() == this_file:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def test_the_design_and_api_documents_exist_and_the_readme_links_them() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("docs/design.md", "docs/api.md"):
        assert (ROOT / name).is_file(), name
        assert f"]({name})" in readme, f"README.md does not link {name}"


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    root = ROOT.resolve()
    broken = []
    for target in LINK.findall(document.read_text()):
        if target.startswith(EXTERNAL):
            continue
        path = (document.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(root) or not path.exists():
            broken.append(target)
    assert not broken, f"{document.name}: links that do not resolve in the repository: {broken}"


def test_the_link_pattern_finds_links_and_nothing_else() -> None:
    text = 'see [the design](docs/design.md#roles), ![shot](docs/x.png "t") and [a](https://e)'
    assert LINK.findall(text) == ["docs/design.md#roles", "docs/x.png", "https://e"]
    assert OUTSIDE.search("read ../shared/notes") and OUTSIDE.search("/work/shared/STYLE.md")
    assert not OUTSIDE.search("docs/design.md") and not OUTSIDE.search("scripts/shared.sh")
