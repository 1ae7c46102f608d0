"""Running the docs' commands as a user would (tests/test_readme_tour.py, tests/test_guides_run.py): in a directory
laid out as the repo, shell lines through bash with `.venv/bin/` as written, Python snippets shown as a REPL
shows them; and the code blocks of a markdown file, for the tests to take their commands from."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def repo_dir(path: Path, edits: dict[str, dict] | None = None) -> Path:
    """`path` laid out as the repo: search_spaces/, trials/, configs/ (each file a link to the repo's, but for
    `edits`: {"trials/x.yaml": {top-level key: value}}, written as a copy with those keys replaced: a tiny budget),
    teachers/ and .venv (this interpreter's)."""
    path.mkdir(parents=True, exist_ok=True)
    for d in ("search_spaces", "trials", "configs"):
        (path / d).mkdir()
        for f in (ROOT / d).iterdir():
            (path / d / f.name).symlink_to(f)
    (path / "teachers").symlink_to(ROOT / "teachers")
    (path / ".venv").symlink_to(BIN.parent)  # the whole venv: .venv/bin/python finds its site-packages
    for name, changes in (edits or {}).items():
        data = yaml.safe_load((ROOT / name).read_text())
        data.update(changes)
        (path / name).unlink()
        (path / name).write_text(yaml.safe_dump(data))
    return path


def fail_message(what: str, r: subprocess.CompletedProcess) -> str:
    return f"{what}\nexit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def sh(command: str, cwd: Path, timeout: float = 900, ok: bool = True) -> subprocess.CompletedProcess:
    """`command` through bash in `cwd` (RAY_AUTH_MODE=disabled); with `ok`, asserts it exits 0."""
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=ENV, capture_output=True,
                       text=True, timeout=timeout)
    assert not ok or r.returncode == 0, fail_message(command, r)
    return r


#: runs a script statement by statement, printing each expression statement's value as the REPL would
_REPL = """import ast, sys
ns = {"__name__": "__main__"}
for node in ast.parse(sys.stdin.read()).body:
    if isinstance(node, ast.Expr):
        value = eval(compile(ast.Expression(node.value), "<doc>", "eval"), ns)
        if value is not None:
            print(repr(value))
    else:
        exec(compile(ast.Module([node], []), "<doc>", "exec"), ns)
"""


def py(source: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """A Python snippet in `cwd`, as typed into the REPL (an expression's value is printed); asserts it ran."""
    r = subprocess.run([str(BIN / "python"), "-c", _REPL], input=source, cwd=cwd, env=ENV, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, fail_message(source, r)
    return r


# -- code blocks of a markdown file -----------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass
class Block:
    line: int      # 1-based, the block's first code line
    lang: str      # a fenced block's info string; "" for an indented one
    text: str      # the code, indentation removed

    @property
    def first(self) -> str:
        return self.text.splitlines()[0].strip()


def code_blocks(path: Path) -> list[Block]:
    """Fenced blocks and indented ones (4 spaces after a blank line, running on over blank lines)."""
    lines, blocks, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if m := FENCE.match(line):
            lang, start, body = line.strip()[3:].strip(), i + 2, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(m.group(1)):
                body.append(lines[i])
                i += 1
            blocks.append(Block(start, lang, "\n".join(body)))
        elif line.startswith("    ") and line.strip() and (i == 0 or not lines[i - 1].strip()):
            start, body = i + 1, []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            blocks.append(Block(start, "", "\n".join(body).strip("\n")))
            continue
        i += 1
    return blocks


def shell_commands(text: str) -> list[str]:
    """A shell block's commands: backslash continuations joined, a here-document kept with its command,
    comment lines (shown output) left out."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        if m := re.search(r"<<-?'?(\w+)'?", line):
            while i < len(lines) and lines[i].strip() != m.group(1):
                line += "\n" + lines[i]
                i += 1
            line += "\n" + m.group(1)
            i += 1
        out.append(line)
    return out
