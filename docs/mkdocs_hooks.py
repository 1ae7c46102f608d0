"""MkDocs hooks (mkdocs.yml `hooks:`). GitHub needs a pipe inside a table cell's code escaped (`a\\|b`), where
Python-Markdown's tables already leave a code span's pipes alone and would print the backslash: unescape them."""

from __future__ import annotations

import re

CODE_SPAN = re.compile(r"`[^`]*`")


def on_page_markdown(markdown: str, **kwargs) -> str:
    return "\n".join(CODE_SPAN.sub(lambda m: m.group(0).replace("\\|", "|"), line) if line.lstrip().startswith("|")
                     else line for line in markdown.split("\n"))
