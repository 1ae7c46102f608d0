"""The docs a user follows: README.md (the front door) and docs/ (guides, reference).

Every relative link and #anchor resolves (GitHub's heading slugs), every `autocompress COMMAND ...` line names
a real command and only options its `--help` lists, the CLI reference page is what docs/gen_cli.py renders,
and the reference site (mkdocs.yml) builds with warnings as errors, the public API all in it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# generated (benchmarks.report) or carried as is: another owner's; links there are checked by their build only
NOT_CHECKED = {ROOT / "docs" / "BENCHMARKS.md", ROOT / "docs" / "legacy.md"}
DOCS = [README] + sorted(p for p in (ROOT / "docs").rglob("*.md") if p not in NOT_CHECKED)

sys.path.insert(0, str(ROOT / "docs"))
import gen_cli  # noqa: E402  (docs/gen_cli.py)
from griffe_doctest import fence_doctests  # noqa: E402  (docs/griffe_doctest.py)

from _shell import FENCE  # noqa: E402  (tests/_shell.py: a markdown code fence, as the guide runner reads them)

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`]*`")


def prose_lines(path: Path):
    """(line number, line) outside fenced and indented code blocks, inline code spans removed."""
    in_fence, prev_blank = False, True
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        indented_code = line.startswith("    ") and prev_blank
        prev_blank = not line.strip() or (indented_code and prev_blank)
        if in_fence or indented_code:
            continue
        yield i, CODE_SPAN.sub("", line)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text (markup dropped) lowercased, punctuation but - and _ removed,
    each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_github_slug():
    assert github_slug("Held-out pick, disjoint seeds and the reference row") == \
        "held-out-pick-disjoint-seeds-and-the-reference-row"
    assert github_slug("Ship it: C / ONNX") == "ship-it-c--onnx"
    assert github_slug("Where a C-runtime `act()` goes (hand-measured)") == "where-a-c-runtime-act-goes-hand-measured"


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= 220, f"README.md has {n} lines: it is the front door; move reference material to docs/guides/"


def test_ci_runs_readmes_install_and_test_commands():
    """.ci/run installs and tests with the commands README gives, word for word."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    readme = {line.strip() for line in README.read_text().splitlines()}
    for marker in ("# README: install", "# README: test"):
        at = next(i for i, line in enumerate(ci) if line.startswith(marker))
        command = ci[at + 1].strip()
        assert command in readme, f".ci/run runs {command!r} (after {marker!r}), which README.md does not say"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path: Path):
    broken = []
    for i, line in prose_lines(path):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.name}:{i}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{path.name}:{i}: {target}: no heading with that anchor in {dest.name}")
    assert not broken, "\n".join(broken)


def test_cli_reference_is_fresh():
    page = gen_cli.PAGE.read_text()
    assert page == gen_cli.render(), "docs/reference/cli.md is out of date: run python docs/gen_cli.py"


def command_lines(path: Path):
    """(line number, text) of what a user would type: code lines (backslash continuations joined) and inline code."""
    lines = path.read_text().splitlines()
    in_fence, prev_blank, i = False, True, 0
    while i < len(lines):
        line, at = lines[i], i + 1
        if FENCE.match(line):
            in_fence = not in_fence
        elif in_fence or (line.startswith("    ") and prev_blank):
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            yield at, line
        else:
            prev_blank = not line.strip()
            for span in CODE_SPAN.findall(line):
                yield at, span.strip("`")
        i += 1


def doc_invocations(path: Path):
    """(line, command, options) for each `autocompress COMMAND ...` in the doc's commands."""
    for at, text in command_lines(path):
        text = text.replace("\\|", " ")  # a table cell's escaped pipe: choices, not a shell pipe
        for m in re.finditer(r"(?:^|[\s/])(?<!import )(?<!from )autocompress\s+([a-z][\w-]*)(.*)", text):
            rest = re.split(r"\s\|\s|&&|;|\s#\s|\s>\s|<<", m.group(2))[0]
            yield at, m.group(1), re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", rest)


def test_doc_commands_name_real_commands_and_options():
    """A doc that names a command or a flag that does not exist fails here (options as --help lists them)."""
    commands = gen_cli.commands()
    known = {name: {"--help"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
             for name, cmd in commands.items()}
    wrong, seen = [], 0
    for path in DOCS:
        for at, name, options in doc_invocations(path):
            seen += 1
            where = f"{path.relative_to(ROOT)}:{at}"
            if name not in known:
                wrong.append(f"{where}: autocompress {name}: no such command (commands: {', '.join(known)})")
                continue
            wrong += [f"{where}: autocompress {name} {o}: no such option" for o in options if o not in known[name]]
    assert seen > 20, f"only {seen} command lines found in the docs: the parser missed them"
    assert not wrong, "\n".join(wrong)


def test_doc_command_parser_catches_a_wrong_flag(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("Run it:\n\n    .venv/bin/autocompress pick runs/x --min-return-ratio 0.9 \\\n        --no-such-flag 1"
                   " && make\n\n    import autocompress as ac\n\n| `autocompress search S [--sampler tpe\\|nsga2] [--resume \\| --join]` | x |\n")
    assert list(doc_invocations(doc)) == [(3, "pick", ["--min-return-ratio", "--no-such-flag"]),
                                          (8, "search", ["--sampler", "--resume", "--join"])]


def test_doctests_render_as_code():
    assert fence_doctests("Text.\n>>> x = {'a': [1]}\n>>> x['a'][0]\n1\n\nMore.") == \
        "Text.\n\n```pycon\n>>> x = {'a': [1]}\n>>> x['a'][0]\n1\n```\n\nMore."


def test_reference_site_builds_strict(tmp_path):
    """mkdocs build --strict: a broken link or anchor, a docstring that does not render, a page missing from the
    nav fails it; the API page documents every name in autocompress.__all__."""
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import autocompress

    api = (site / "reference" / "api" / "index.html").read_text()
    missing = [n for n in autocompress.__all__
               if f'id="autocompress.{n}"' not in api and f'id="autocompress._search.run.{n}"' not in api]
    assert not missing, f"the API reference does not document {missing}"
