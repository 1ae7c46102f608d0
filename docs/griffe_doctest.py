"""A Griffe extension for the API reference (mkdocs.yml): a docstring's doctest block (`>>>` to the next
blank line) is rendered as a code block, not as Markdown text (where `x["a"][0]` reads as a link)."""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    out, block = [], []
    for line in text.split("\n") + [""]:
        if block and line.strip():
            block.append(line)
            continue
        if block:  # a blank line (or the end) closes the block
            out += ([""] if out and out[-1].strip() else []) + ["```pycon", *block, "```"]
            block = []
        if line.lstrip().startswith(">>>"):
            block.append(line)
        else:
            out.append(line)
    return "\n".join(out[:-1])


class DoctestAsCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
