"""Papers are cited by title and arXiv id, and the repository's docs are the specification.

Names of files outside the repository (a specification or paper notes that only some machines
have) mean nothing to a reader of a clone, so no tracked file may use them; every arXiv id the
package cites must be listed in the "Papers" table of docs/algorithms.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve().relative_to(REPO).as_posix()
# Matched case-insensitively: "Seed 004" at the start of a comment is the same reference.
FORBIDDEN = ("SPEC §", "SPEC.md", "seed 00", "shared/seeds")
_FORBIDDEN_RE = re.compile("|".join(re.escape(s) for s in FORBIDDEN), re.IGNORECASE)
_ARXIV_RE = re.compile(r"(?:arXiv:|arxiv\.org/abs/)(\d{4}\.\d{4,5})", re.IGNORECASE)


def forbidden_references(text: str) -> list[tuple[int, str]]:
    """``(line number, matched text)`` of every reference to a file outside the repository."""
    return [(number, match.group(0)) for number, line in enumerate(text.splitlines(), 1)
            for match in _FORBIDDEN_RE.finditer(line)]


def arxiv_ids(text: str) -> set[str]:
    return set(_ARXIV_RE.findall(text))


def papers_section(markdown: str) -> str:
    """The "## Papers" section, up to the next ``## `` heading."""
    return markdown.split("\n## Papers\n", 1)[1].split("\n## ", 1)[0]


def papers_table_ids(markdown: str) -> set[str]:
    """arXiv ids in the table rows of the "## Papers" section."""
    return {found for line in papers_section(markdown).splitlines() if line.startswith("|")
            for found in arxiv_ids(line)}


def _tracked_text_files() -> dict[str, str]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    texts = {}
    for name in filter(None, listed.decode().split("\0")):
        path = REPO / name
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def test_forbidden_references_names_each_line():
    text = "ok\nas in SPEC §1 and Seed 004 Eq. 1\nsee SPEC.md\nshared/seeds/000_x.txt\nSPECIAL, seed 10, UNSPECIFIED"
    assert forbidden_references(text) == [(2, "SPEC §"), (2, "Seed 00"), (3, "SPEC.md"), (4, "shared/seeds")]


def test_papers_table_ids_reads_only_the_table():
    markdown = ("# T\nIntro arXiv:1111.11111.\n\n## Papers\n\n| a | b |\n|---|---|\n"
                "| X | [2504.11343](https://arxiv.org/abs/2504.11343) |\n| Y | arXiv:1912.09729 |\n\n"
                "Below the table arXiv:2222.22222.\n\n## 1. Next\n| Z | arXiv:3333.33333 |\n")
    assert papers_table_ids(markdown) == {"2504.11343", "1912.09729"}


def test_no_tracked_file_cites_files_outside_the_repository():
    hits = [f"{name}:{number}: {found!r}" for name, text in sorted(_tracked_text_files().items()) if name != THIS_FILE
            for number, found in forbidden_references(text)]
    assert not hits, "cite the paper (title, arXiv id) or the repo docs instead:\n" + "\n".join(hits)


def test_every_arxiv_id_cited_in_the_package_is_in_the_papers_table():
    table = papers_table_ids((REPO / "docs" / "algorithms.md").read_text())
    # The four papers whose algorithms the package implements.
    assert {"2504.11343", "2501.03262", "2508.08221", "2503.20783"} <= table
    cited: dict[str, list[str]] = {}
    for name, text in _tracked_text_files().items():
        if name.startswith("openrlhf_ext/"):
            for found in arxiv_ids(text):
                cited.setdefault(found, []).append(name)
    assert cited, "the package cites no arXiv id at all: the scan is broken"
    missing = {found: sorted(names) for found, names in cited.items() if found not in table}
    assert not missing, f"add these papers to the Papers table of docs/algorithms.md: {missing}"


def test_papers_table_links_each_id_to_arxiv():
    markdown = (REPO / "docs" / "algorithms.md").read_text()
    section = papers_section(markdown)
    for found in papers_table_ids(markdown):
        assert f"[{found}](https://arxiv.org/abs/{found})" in section
