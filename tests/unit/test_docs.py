"""The README's links into docs/ (mkdocs --strict checks the links between the pages themselves)."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_relative_link_of_the_readme_names_a_file_that_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    links = [m for m in re.findall(r"\]\(([^)]+)\)", readme) if "://" not in m]
    assert links, "the README links its reference pages"
    missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
    assert missing == []


def test_every_page_in_docs_is_in_the_mkdocs_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert [p for p in pages if f": {p}" not in nav] == []
