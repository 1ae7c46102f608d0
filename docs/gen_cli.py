"""Render docs/reference/cli.md: each command's `--help`, as `autocompress COMMAND --help` prints it.

    python docs/gen_cli.py            # rewrite docs/reference/cli.md
    python docs/gen_cli.py --check    # exit 1 if the checked-in page differs (tests/test_docs.py does this)

The help is laid out at a fixed width (WIDTH), so the page does not depend on the terminal it is made in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import typer

PAGE = Path(__file__).resolve().parent / "reference" / "cli.md"
WIDTH = 100


def commands() -> dict[str, click.Command]:
    """The CLI's commands by name, in the order `autocompress --help` lists them."""
    from autocompress.cli import app

    group = typer.main.get_command(app)
    ctx = click.Context(group, info_name="autocompress")
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


def help_text(name: str | None = None) -> str:
    """`autocompress [NAME] --help`, laid out WIDTH columns wide."""
    from autocompress.cli import app

    group = typer.main.get_command(app)
    root = click.Context(group, info_name="autocompress", terminal_width=WIDTH, max_content_width=WIDTH)
    if name is None:
        return group.get_help(root).rstrip() + "\n"
    cmd = group.get_command(root, name)
    ctx = click.Context(cmd, info_name=name, parent=root, terminal_width=WIDTH, max_content_width=WIDTH)
    return cmd.get_help(ctx).rstrip() + "\n"


def render() -> str:
    parts = ["# Command line reference\n",
             "Generated from each command's `--help` by `python docs/gen_cli.py` (a test fails when this page "
             "differs from what it renders). Exit codes and what each command is for: "
             "[Tune a search](../guides/tune-a-search.md#commands).\n",
             "## autocompress\n", "```text\n" + help_text() + "```\n"]
    for name in commands():
        parts += [f"## autocompress {name}\n", "```text\n" + help_text(name) + "```\n"]
    return "\n".join(parts)


if __name__ == "__main__":
    page = render()
    if "--check" in sys.argv[1:]:
        if PAGE.read_text() != page:
            sys.exit(f"{PAGE} is out of date: run python docs/gen_cli.py")
    else:
        PAGE.write_text(page)
        print(f"wrote {PAGE}")
