"""Every command in docs/guides/*.md is run (issue 29): shell lines through bash, Python snippets as the REPL runs
them, taken from the markdown itself, in the guide's order, in a directory laid out as the repo, at a tiny budget
(SUBSTITUTE: what each guide's command is cut to; `repo_dir` edits: tiny copies of the shipped specs). A command
this cannot run is in SKIP with its reason; a block that shows a file or output is in SHOWN; a YAML excerpt
(a spec, a space, a techniques config) is no command. `test_every_guide_command_is_run_or_skipped` fails on a
new command that no test runs, and on a stale entry in those tables."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from _shell import ENV, ROOT, code_blocks, py, repo_dir, sh, shell_commands
from conftest import free_port, stop, wait_until

GUIDES = ROOT / "docs" / "guides"

#: (guide, a block's first line): what the block shows (not a command)
SHOWN = {
    ("layout.md", "autocompress/"): "the package's files",
    ("tune-a-search.md", "distill → structured → lowrank  →  prune masks, share codebooks, QAT fake-quant"):
        "the order the pipeline runs techniques in",
    ("tune-a-search.md", "trial 1: latency 1.24 µs (×0.472), 55,521 bytes (×0.2050)"): "what `pick` prints",
}

#: (guide, a command's start): why it is not run
SKIP = {
    ("compress-your-own-policy.md", '.venv/bin/pip install -e ".[sb3]"'):
        "installs into the venv: the tests' venv has [dev], which holds [sb3]",
    ("layout.md", ".venv/bin/mkdocs serve"):
        "a dev server that runs until stopped: tests/test_docs.py builds the same site with --strict",
    ("ship-it.md", "sudo apt-get install"): "installs system packages as root: .ci/run installs the same ones",
}

#: guide: (text as written, as run): what a command is cut to; each must occur in the guide
SUBSTITUTE = {
    "compress-your-own-policy.md": [
        ("learn(30_000)", "learn(10_000)"),
        ("for _ in range(5)", "for _ in range(2)"),
        ('"finetune": {"iterations": 2}', '"finetune": {"iterations": 0}, "eval": {"episodes": 5, '
                                          '"heldout_episodes": 5, "fresh_episodes": 5}'),
        ('"budget": {"trials": 12}', '"budget": {"trials": 2}'),
    ],
    "ship-it.md": [("'11'", "'2'"), ("--trial 11", "--trial 2"), ("-p 5001", "-p {port}"),
                   ("localhost:5001", "localhost:{port}"), ("<run_id>", "{run_id}"), ("--trial 3", "--trial {picked}")],
}

#: the MinAtar search (compress-your-own-policy.md) on the committed teacher: 2 trials, PTQ, no fine-tuning
TINY_MINATAR = {
    "trials/minatar_breakout_ppo.yaml": {"finetune": {"iterations": 0},
                                         "eval": {"episodes": 3, "heldout_episodes": 3}},
    "search_spaces/minatar_breakout_ppo.yaml": {"budget": {"trials": 2, "parallel": 2},
                                                "techniques": {"quantize": {"bits": {"low": 6, "high": 8}}}},
}
#: ship-it.md's Cortex-M0+ search, pick and export: 3 trials one at a time (the teacher, a [16, 16] student (fp32:
#: 10.7 KB of flash), then the stack of that student at 8 bits: integer-only, under pick's 4096 B), no fine-tuning
TINY_M0 = {
    "trials/cartpole_ppo.yaml": {"finetune": {"iterations": 0},
                                 "eval": {"episodes": 3, "heldout_episodes": 5, "fresh_episodes": 5}},
    "search_spaces/cartpole_ppo.yaml": {"budget": {"trials": 3, "parallel": 1},
                                        "techniques": {"distill": {"hidden": {"choices": [[16, 16]]}},
                                                       "quantize": {"bits": 8, "symmetric": True}}},
}


def is_yaml_excerpt(text: str) -> bool:
    try:
        return isinstance(yaml.safe_load(text), dict)
    except yaml.YAMLError:
        return False


def commands(guide: str) -> list[tuple[int, str, str]]:
    """(block index, "python" | "shell", command) for each command of the guide, in its order."""
    out = []
    for i, block in enumerate(code_blocks(GUIDES / guide)):
        if (guide, block.first) in SHOWN:
            continue
        if re.match(r"(import|from) \w", block.first):
            out.append((i, "python", block.text))
        elif block.lang == "yaml" or is_yaml_excerpt(block.text):
            continue
        else:
            out += [(i, "shell", c) for c in shell_commands(block.text)]
    return out


def skipped(guide: str, command: str) -> bool:
    return any(g == guide and command.startswith(start) for g, start in SKIP)


def as_run(guide: str, command: str, **values) -> str:
    for old, new in SUBSTITUTE.get(guide, []):
        command = command.replace(old, new.format(**values) if values else new)
    return command


#: guides whose commands a test below runs
RUN_HERE = {"compress-your-own-policy.md", "layout.md", "ship-it.md"}


def test_every_guide_command_is_run_or_skipped():
    guides = {p.name: commands(p.name) for p in sorted(GUIDES.glob("*.md"))}
    with_commands = {g for g, cs in guides.items() if any(not skipped(g, c) for _, _, c in cs)}
    assert with_commands == RUN_HERE, f"guides with commands: {sorted(with_commands)}; run here: {sorted(RUN_HERE)}"
    stale = [k for k in SKIP if not any(c.startswith(k[1]) for _, _, c in guides[k[0]])]
    stale += [k for k in SHOWN if not any(b.first == k[1] for b in code_blocks(GUIDES / k[0]))]
    stale += [(g, old) for g, subs in SUBSTITUTE.items() for old, _ in subs
              if not any(old in c for _, _, c in guides[g])]
    assert not stale, f"no longer in the guides: {stale}"
    kinds = {g: [(k, c.split()[0]) for _, k, c in cs] for g, cs in guides.items()}
    assert ("python", "import") in kinds["ship-it.md"] and ("shell", ".venv/bin/python") in kinds["layout.md"], kinds


def test_guide_blocks_are_read_as_a_user_pastes_them(tmp_path):
    doc = tmp_path / "g.md"
    doc.write_text("Text:\n\n    a --x \\\n        --y\n    # shown output\n\n    b <<'PY'\n    x = 1\n    PY\n"
                   "    c\n\nMore.\n\n```yaml\nk: 1\n```\n")
    blocks = code_blocks(doc)
    assert [(b.line, b.lang) for b in blocks] == [(3, ""), (15, "yaml")]
    assert shell_commands(blocks[0].text) == ["a --x --y", "b <<'PY'\nx = 1\nPY", "c"]


def test_layout(tmp_path):
    """The contributor's commands: gen_cli writes the CLI reference page (in a copy of docs/: the repo's page
    is left alone; tests/test_docs.py checks that it is fresh)."""
    d = repo_dir(tmp_path)
    (d / "docs" / "reference").mkdir(parents=True)
    (d / "docs" / "gen_cli.py").write_text((ROOT / "docs" / "gen_cli.py").read_text())
    ran = 0
    for _, kind, command in commands("layout.md"):
        if skipped("layout.md", command):
            continue
        r = sh(command, d, timeout=300)
        ran += 1
        if "gen_cli.py" in command:
            page = d / "docs" / "reference" / "cli.md"
            assert "wrote" in r.stdout and page.read_text() == (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert ran


@pytest.mark.slow
def test_ship_it(readme_tour, tmp_path):
    """ship-it.md from README's run dir (conftest's readme_tour, trial 11 there: 2): the trial's MLflow model
    loaded and served, pick --register and the registered model loaded, the C export built and acting; then the
    Cortex-M0+ search, pick under 4 KB of flash and the export cross-built, in a directory of its own."""
    guide, tour, m0 = "ship-it.md", readme_tour, repo_dir(tmp_path / "m0", TINY_M0)
    values, server, cwd = {"port": free_port(), "run_id": "", "picked": ""}, None, tour
    try:
        for block, kind, written in commands(guide):
            if written.startswith("sudo apt-get install"):
                cwd = m0  # the microcontroller section: a search of its own
            if skipped(guide, written):
                continue
            command = as_run(guide, written, **values)
            if kind == "python":
                if "run_id" in command:
                    command += "\nprint('run_id', run_id)"
                out = py(command, cwd).stdout
                if "run_id" in command:
                    values["run_id"] = re.search(r"^run_id (\w+)$", out, re.M).group(1)
                    assert re.search(r"^array\(\[[01], [01], [01], [01], [01]\]\)$", out, re.M), out
                else:
                    assert re.search(r"^mlflow.pyfunc.loaded_model:\n(.*\n)*  run_id: \w+$", out, re.M), out
            elif "models serve" in command:
                server = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=ENV, start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"))
                port = values["port"]
                assert wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5).status
                                  == 200, 180, server), (tmp_path / "serve.log").read_text()[-3000:]
            elif command.startswith("curl"):
                out = sh(command, cwd).stdout
                assert re.fullmatch(r'\{"predictions": \[[01]\]\}\s*', out), out  # as the guide shows
                stop(server)
                server = None
            else:
                r = sh(command, cwd)
                if " pick " in command and "--register" in command:
                    assert "cartpole-policy" in r.stderr and "champion" in r.stderr, r.stderr
                elif " pick " in command:
                    values["picked"] = re.search(r"trial (\d+)", r.stdout).group(1)
                elif "--format c" in command and cwd == tour:
                    assert (cwd / "policy_c" / "policy.c").is_file() and "cc -std=c99" in r.stdout, r.stdout
                    if "./policy" in command:
                        assert r.stdout.split()[-1] in {"0", "1"}, r.stdout
    finally:
        if server is not None:
            stop(server)
    assert values["run_id"] and values["picked"]
    assert "-mcpu=cortex-m0plus" in (m0 / "policy_m0" / "Makefile").read_text()
    assert (tour / "policy_c" / "policy").is_file()


@pytest.mark.slow
def test_compress_your_own_policy(tmp_path):
    """An SB3 and an RLlib PPO trained, imported, validated and searched (2 trials each, no fine-tuning); the
    MinAtar search on its committed CNN teacher (2 trials)."""
    guide, d = "compress-your-own-policy.md", repo_dir(tmp_path, TINY_MINATAR)
    for _, kind, written in commands(guide):
        if skipped(guide, written):
            continue
        r = (py if kind == "python" else sh)(as_run(guide, written), d)
        if " validate " in written:
            assert re.search(r"imported sb3 PPO policy .*\n.*\n  return over 10 seeded episodes .*: autocompress "
                             r"\w+ runtime [\d.]+ ± [\d.]+, source [\d.]+ ± [\d.]+", r.stdout), r.stdout
        elif " search " in written:
            name = Path(written.split()[-1]).stem.removesuffix("_space")
            assert (d / "runs" / name / "pareto").is_dir(), r.stdout
    for name in ("my_ppo", "my_rllib_ppo", "minatar_breakout_ppo"):
        assert (d / "runs" / name / "study.journal").is_file()
