"""The README and docs/ cite only files that are in the repository, and neither they nor the code cite a design
document that is not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# A relative path with a folder, or a bare page name; not an absolute path, a $VAR/ or a .../ placeholder.
REFERENCE = re.compile(
    r"(?<![\w/.$~-])((?:[\w-]+/)+[\w.-]+\.(?:md|py|json|toml|sh|service|env|sqlite|ini)|[\w-]+\.md)\b"
)
# Design notes that lived outside the repository; a page citing them sends readers nowhere.
OUTSIDE = re.compile(
    r"\bDES"
    r"IGN\b|(?i:design\.md)|(?i:\bdesign doc)|(?i:\bthe seed's\b)|(?i:\bseed (?:§|document|issue))|STYLE\.md|"
    r"\.\./sha"
    r"red\b"
)
PACKAGES = [p for p in ROOT.iterdir() if (p / "__init__.py").exists()]
# Where the code's docstrings and comments are (this file names the patterns, so it is left out).
SOURCES = sorted(
    p for folder in (*PACKAGES, ROOT / "tools") for p in folder.rglob("*.py") if p != Path(__file__).resolve()
)
# A Markdown link to a page or file: [text](target), the target without its #anchor.
LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)(?:#[^)\s]*)?\)")


def found(reference: str) -> bool:
    """In the repository root, in docs/, or under a package (docs write `store/schema.py` for cloud_bridge's)."""
    return any((base / reference).exists() for base in (ROOT, ROOT / "docs", *PACKAGES))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_file_a_page_names_is_in_the_repository(page: Path) -> None:
    missing = [
        f"{page.name}:{n}: {m.group(1)}"
        for n, line in enumerate(page.read_text().splitlines(), 1)
        for m in REFERENCE.finditer(line)
        if not found(m.group(1))
    ]
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_cites_a_design_document_outside_the_repository(page: Path) -> None:
    cited = [
        f"{page.name}:{n}: {line.strip()}"
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert cited == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_of_a_page_leads_to_a_file(page: Path) -> None:
    broken = [
        f"{page.name}:{n}: {m.group(1)}"
        for n, line in enumerate(page.read_text().splitlines(), 1)
        for m in LINK.finditer(line)
        if not (page.parent / m.group(1)).exists()
    ]
    assert broken == []


def test_no_docstring_or_comment_cites_a_design_document_outside_the_repository() -> None:
    cited = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in SOURCES
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert cited == []


def test_the_checks_see_what_they_look_for() -> None:
    # Built from parts, so this file itself cites nothing outside the repository.
    design, shared = "DES" + "IGN", ".." + "/shared"
    assert OUTSIDE.search(f'"""The uplink ({design} \N{SECTION SIGN}5)."""')
    assert OUTSIDE.search(f"see {shared}/notes.md")
    assert [m.group(1) for m in LINK.finditer("[a](tokens.md#s3) [b](https://x.org/y) [c](#here)")] == ["tokens.md"]
    assert SOURCES
