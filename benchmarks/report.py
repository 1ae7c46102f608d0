"""docs/BENCHMARKS.md rendered from docs/data alone: no figure in it is typed by hand.

    python -m benchmarks.report            # write docs/BENCHMARKS.md
    python -m benchmarks.report --check    # exit 1 if the checked-in report differs from the render

Every benchmark keeps its raw results in docs/data/<file>.json and, under "_meta", per section it measured:
the command, the git commit, the machine and the date (`common.record_meta`). Each benchmark module that
reports this way lists its sections (`sections()`: name, data file, the code it measures, how it renders,
the targets it reports). This renders them in order, says under each the command and commit that made it,
marks a section **stale** when the code it measures changed since that commit (naming the files), and opens
with one line per target: what was measured, met / missed / stale, and a link to its section.

Sections measured before this report existed are carried verbatim from docs/legacy.md, under a heading that
says so, until their benchmark is moved here (or they are dropped): their figures were typed by hand and are
not checked against any data.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.common import DATA, DOC, changed_files

#: the benchmark modules whose sections this report renders, in the report's order
REPORTED = ("benchmarks.mcu", "benchmarks.latency_floor", "benchmarks.techniques", "benchmarks.scaling",
            "benchmarks.pareto_quality", "benchmarks.search_efficiency", "benchmarks.algorithms", "benchmarks.imports",
            "benchmarks.critic_warmup", "benchmarks.kernels", "benchmarks.lsq", "benchmarks.search_value",
            "benchmarks.recipes", "benchmarks.conv_search", "benchmarks.conv_kernels", "benchmarks.exports",
            "benchmarks.recurrent")
LEGACY = DOC.parent / "legacy.md"
#: what the data's "_meta" entry of a section must say
META_KEYS = ("command", "commit", "machine", "date")


@dataclass(frozen=True)
class Target:
    what: str      # the target, as its issue states it
    figure: str    # what was measured against it
    met: bool | None  # None: measured, no target to meet


@dataclass(frozen=True)
class Section:
    name: str                                   # its anchor; its data's "_meta" key
    title: str
    data: str                                   # docs/data/<data>.json
    measures: tuple[str, ...]                   # paths (repo-relative) whose change makes it stale
    render: Callable[[dict], str]               # the data file's content -> the section's body
    targets: Callable[[dict], list[Target]] = field(default=lambda data: [])


def meta_of(section: Section, data: dict) -> dict:
    """The section's "_meta" entry, refused (ValueError naming the file and what is missing) unless it says
    every one of META_KEYS: a figure without its command and commit cannot be re-derived or dated."""
    meta = data.get("_meta", {}).get(section.name)
    missing = [k for k in META_KEYS if not (meta or {}).get(k)]
    if missing:
        raise ValueError(f"docs/data/{section.data}.json: section {section.name!r} has no {', '.join(missing)} "
                         "in its _meta entry: re-run its benchmark (common.record_meta records them)")
    return meta


def stale_files(section: Section, meta: dict) -> list[str]:
    """The measured files changed since the section's commit (all of them where it was measured on a tree with
    uncommitted changes: its commit does not say what ran)."""
    if meta["commit"].endswith("+dirty"):
        return list(section.measures)
    return changed_files(meta["commit"], list(section.measures))


def all_sections() -> list[Section]:
    return [s for mod in REPORTED for s in importlib.import_module(mod).sections()]


def load(section: Section) -> dict:
    return json.loads((DATA / f"{section.data}.json").read_text())


def status(t: Target, stale: bool) -> str:
    word = "measured" if t.met is None else "met" if t.met else "**missed**"
    return f"{word}, **stale**" if stale else word


def render() -> str:
    """The whole report from docs/data (and docs/legacy.md)."""
    summary, bodies, sections = [], [], all_sections()
    for s in sections:
        data = load(s)
        meta = meta_of(s, data)
        stale = stale_files(s, meta)
        for t in s.targets(data):
            summary.append(f"| {t.what} | {t.figure} | {status(t, bool(stale))} | [{s.title}](#{s.name}) |")
        bodies.append("\n".join([
            f'<a id="{s.name}"></a>', f"## {s.title}", "",
            f"`{meta['command']}` at commit `{meta['commit']}`, {meta['date']}, on {meta['machine']}.",
            *(["", f"**Stale**: changed since `{meta['commit']}`: {', '.join(f'`{f}`' for f in stale)}."]
              if stale else []),
            "", s.render(data).strip()]))
    head = ["# Benchmarks", "",
            "Generated by `python -m benchmarks.report` from the raw results in `docs/data/` (do not edit: a test "
            "fails when this file differs from the render). Each section names the command and commit that "
            "produced it and is marked **stale** when the code it measures has changed since.", "",
            "## Targets at a glance", "",
            "| target | measured | status | section |", "|---|---|---|---|", *summary]
    legacy = _without(LEGACY.read_text() if LEGACY.exists() else "", [s.name for s in sections]).strip()
    tail = ["## Measured before the generated report", "",
            "Carried verbatim from `docs/legacy.md` until each benchmark below writes its data and is rendered "
            "above: these figures were typed by hand, are not checked against data, and may be stale.", "",
            _demote(legacy)] if legacy else []
    return "\n\n".join(["\n".join(head), *bodies, "\n".join(tail)]).rstrip() + "\n"


def _without(markdown: str, names: list[str]) -> str:
    """The legacy text less its <!-- name --> blocks that a section rendered from data now replaces."""
    for name in names:
        markdown = re.sub(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n*", "", markdown,
                          flags=re.DOTALL)
    return markdown


def _demote(markdown: str) -> str:
    """Headings one level down (the legacy text's sections become subsections of its block)."""
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", markdown, flags=re.M)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/BENCHMARKS.md differs from the render")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        same = DOC.exists() and DOC.read_text() == text
        print("docs/BENCHMARKS.md is " + ("up to date" if same else "out of date: run python -m benchmarks.report"))
        return 0 if same else 1
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(DOC.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
