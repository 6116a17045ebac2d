#!/usr/bin/env python
"""Write the flag list of an OpenRLHF release's ``train_ppo_ray`` parser (tests/data/*_flags.tsv).

The list is read with :mod:`ast` from the ``add_argument`` calls in the ``__main__`` block of
``openrlhf/cli/train_ppo_ray.py``: nothing of the old release is imported or installed.

    python scripts/legacy_flag_list.py 0.10.1.post2 > tests/data/openrlhf_0.10.1.post2_train_ppo_ray_flags.tsv
    python scripts/legacy_flag_list.py path/to/train_ppo_ray.py      # a file already at hand

A version is fetched with ``pip download --no-deps openrlhf==VERSION`` (the wheel) into a
temporary directory.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

COLUMNS = ("flag", "action", "type", "nargs", "default", "choices")
CLI_FILE = "openrlhf/cli/train_ppo_ray.py"


def release_source(version: str) -> str:
    """``openrlhf/cli/train_ppo_ray.py`` of the release's wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "-d", tmp, f"openrlhf=={version}"], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith(CLI_FILE)]
            return archive.read(name).decode("utf-8")


def main_block(source: str) -> list[ast.stmt]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'":
            return node.body
    raise SystemExit(f"{CLI_FILE}: no `if __name__ == '__main__'` block")


def flag_rows(source: str) -> list[tuple[str, ...]]:
    """One row per option string: the add_argument keywords as Python source (empty when absent)."""
    rows = []
    for node in ast.walk(ast.Module(body=main_block(source), type_ignores=[])):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        action = ast.literal_eval(keywords.get("action", "'store'"))
        for option in node.args:
            rows.append((ast.literal_eval(option), action, keywords.get("type", ""), keywords.get("nargs", ""),
                         keywords.get("default", ""), keywords.get("choices", "")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("release", help="an OpenRLHF version on PyPI, or the path of a train_ppo_ray.py")
    release = parser.parse_args().release
    path = Path(release)
    source = path.read_text(encoding="utf-8") if path.is_file() else release_source(release)
    label = f"a local file ({path.name})" if path.is_file() else f"OpenRLHF {release}"
    print(f"# Flags of {label}, {CLI_FILE}: its parser's add_argument calls, read with ast.")
    print(f"# Regenerate: python scripts/legacy_flag_list.py {release}")
    print("# Columns: the add_argument keywords as Python source, empty when not given.")
    print("\t".join(COLUMNS))
    for row in flag_rows(source):
        print("\t".join(row))


if __name__ == "__main__":
    main()
