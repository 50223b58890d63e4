"""The Markdown pages: every relative link and image resolves, every test they cite by
`tests/FILE.py::NAME` exists, and the README stays short.

Fast and offline: no jax import, no network. Links to http(s), mailto and other schemes and pure
`#anchor` links are not checked; a `#anchor` suffix is stripped before the path is checked (the
anchor itself is not). Links inside fenced code blocks and inline code spans are not links.
"""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
SKIP_DIRS = {".git", ".venv", "venv", "runs", "node_modules", ".pytest_cache", "build", "__pycache__"}

# [text](target "title") and ![alt](target): the target is the first token, or <...>.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+[^)]*)?\)")
# [label]: target   (reference-style link definitions)
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
IMG_SRC = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+))", re.IGNORECASE)
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
CITED_TEST = re.compile(r"tests/(\w+\.py)::(\w+)")


def markdown_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored *.md files; a directory walk where git is unavailable."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--",
                              "*.md"], cwd=ROOT, capture_output=True, check=True, timeout=600).stdout.decode()
        files = [ROOT / name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*.md") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return sorted({p for p in files if p.is_file()})


def link_targets(text: str):
    """(line number, target) of every link and image in Markdown text, outside code."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            continue
        if match:
            fence = match.group(1)
            continue
        line = CODE_SPAN.sub("", line)
        for m in INLINE_LINK.finditer(line):
            yield number, m.group(1)
        m = REFERENCE_DEF.match(line)
        if m:
            yield number, m.group(1)
        for m in IMG_SRC.finditer(line):
            yield number, next(g for g in m.groups() if g is not None)


def local_path(target: str) -> str | None:
    """The file part of a relative link target, or None for external links and pure anchors."""
    target = target.strip()
    if target.startswith("<") and target.endswith(">"):
        target = target[1:-1].strip()
    if not target or target.startswith("#") or target.startswith("//") or SCHEME.match(target):
        return None
    path = target.split("#", 1)[0].split("?", 1)[0]
    return path or None


def broken_links() -> list[str]:
    broken = []
    for md in markdown_files():
        for number, target in link_targets(md.read_text(encoding="utf-8")):
            path = local_path(target)
            if path is None:
                continue
            base = ROOT if path.startswith("/") else md.parent
            if not (base / path.lstrip("/")).exists():
                broken.append(f"{md.relative_to(ROOT)}:{number} -> {target}")
    return broken


def test_the_link_finder_sees_links_and_images_and_skips_code_and_external_ones():
    text = "\n".join([
        "See [a](a.md) and ![img](fig.png \"title\") and <img src='pic.png' width=3>.",
        "[web](https://example.org) [mail](mailto:x@y.z) [top](#top) [sec](b.md#part) `[no](code.md)`",
        "```", "[no](fenced.md)", "```",
        "[ref]: c.md",
    ])
    found = [(n, local_path(t)) for n, t in link_targets(text)]
    assert [(n, p) for n, p in found if p] == [(1, "a.md"), (1, "fig.png"), (1, "pic.png"), (2, "b.md"),
                                               (6, "c.md")]


def test_every_relative_link_and_image_in_the_markdown_resolves():
    assert markdown_files(), "no Markdown files found"
    broken = broken_links()
    assert not broken, "broken links (file:line -> target):\n" + "\n".join(broken)


def cited_tests_missing() -> list[str]:
    """`file:line -> tests/FILE.py::NAME` for every cited test whose file or function does not exist."""
    defined: dict[str, set[str]] = {}
    missing = []
    for md in markdown_files():
        for number, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
            for file, name in CITED_TEST.findall(line):
                if file not in defined:
                    path = ROOT / "tests" / file
                    tree = ast.parse(path.read_text(encoding="utf-8")) if path.is_file() else ast.Module([], [])
                    defined[file] = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
                if name not in defined[file]:
                    missing.append(f"{md.relative_to(ROOT)}:{number} -> tests/{file}::{name}")
    return missing


def test_every_test_the_markdown_cites_exists():
    missing = cited_tests_missing()
    assert not missing, "cited tests that do not exist:\n" + "\n".join(missing)


def test_readme_is_at_most_250_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"
