"""The README stays short and the documentation's relative links lead somewhere.

The README holds the two commands, the demo, the stage diagram, the tour and the cluster path; the reference lives in
docs/. Every relative link in README.md and docs/*.md must name a file or folder of the checkout (anchors and
external URLs are not checked), and the README's test command must say what the Makefile's `test` target runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 350

#: [text](target) and [text](target "title"); images too. Reference-style links are not used in these files.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~)")


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _links(path: Path) -> list[tuple[int, str]]:
    """``(line number, target)`` of every inline link outside fenced code blocks and inline code."""
    found, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if fenced:
            continue
        prose = re.sub(r"`[^`]*`", "", line)
        found.extend((number, match.group(1)) for match in _LINK.finditer(prose))
    return found


def _is_relative(target: str) -> bool:
    return not (re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "//")))


def test_readme_is_at_most_350_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move reference text into docs/"
    )


def test_docs_folder_exists_and_the_readme_links_every_page():
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds the reference: no docs/*.md found"
    linked = {
        (README.parent / target.split("#", 1)[0]).resolve()
        for _, target in _links(README)
        if _is_relative(target)
    }
    unlinked = [page.name for page in pages if page.resolve() not in linked]
    assert not unlinked, f"README.md links no entry point to docs/{unlinked}"


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_an_existing_file(document: Path):
    broken = []
    for number, target in _links(document):
        if not _is_relative(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not (document.parent / path).exists():
            broken.append(f"{document.relative_to(REPO)}:{number}: {target}")
    assert not broken, "relative links to missing files:\n" + "\n".join(broken)


def test_readme_test_command_matches_the_makefile():
    """`make test`'s recipe (ruff check, ruff format --check, pytest) is what the README says it runs."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "the Makefile has no test target"
    steps = [line.strip().removeprefix("$(BIN)/") for line in recipe.group(1).splitlines()]
    readme = README.read_text(encoding="utf-8")
    for step in steps:
        assert f"`{step}`" in readme, f"README.md does not name `{step}`, a step of `make test`"
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
