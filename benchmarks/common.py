"""Shared bits of the benchmark scripts: machine facts and writing a section of docs/BENCHMARKS.md."""

from __future__ import annotations

import ast
import functools
import os
import platform
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "BENCHMARKS.md"
DATA = ROOT / "docs" / "data"
#: set B: the fresh episodes a benchmark reports a point on after choosing it elsewhere (seeds SET_B_SEED..), apart
#: from every range a trial, a search or `pick` resets envs with (evaluation 10,000.., checks 77,777..,
#: held-out 1,000,000.., pick's fresh 5,000,000..)
SET_B_SEED = 3_000_000
#: set A: the held-out episodes a benchmark re-evaluates a search's front on and chooses its point by (seeds A_SEED..)
A_SEED = 50_000


#: the package code that decides what an artifact holds and how the host runs it at batch 1: what the sections
#: timing artifacts made without fine-tuning measure (latency_floor, kernels, conv_kernels), the search aside
RUNTIME_CODE = tuple(f"autocompress/{p}" for p in (
    "kernels.c", "native.py", "runtime.py", "artifact.py", "codec.py", "layers.py", "intq.py", "conv.py",
    "recurrent.py", "nets.py", "quantgrid.py", "techniques", "exports", "policy.py", "measure.py",
    "pipeline.py::compress_net", "_api.py::compress_net", "_api.py::_config"))
#: ... and what a trial adds: the teacher (trained, committed or imported), the env, RLlib's fine-tuning, the
#: trial's measurement and the public verbs that run it (not MLflow's mirror, the CLI or the plots: no figure)
TRIAL_CODE = RUNTIME_CODE + tuple(f"autocompress/{p}" for p in (
    "pipeline.py", "rl.py", "_rl_modules.py", "algos.py", "config.py", "teacher.py", "sources", "envs.py",
    "minatar_env.py", "seeds.py", "targets.py", "results.py", "_api.py"))
#: ... and what a search adds: the space, the sampler, early stopping, the driver, the front and held-out pick
SEARCH_CODE = TRIAL_CODE + tuple(f"autocompress/{p}" for p in (
    "_search", "pareto.py", "samplers.py", "pruners.py", "space.py", "space_entries.py", "layer_sensitivity.py"))


def machine() -> str:
    import numpy
    import optuna
    import ray
    import torch

    cpu = ""
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    nproc = len(os.sched_getaffinity(0))  # the cores this process may run on (`nproc` obeys OMP_NUM_THREADS)
    return (f"{cpu or platform.processor()}, {nproc} cores; Python {platform.python_version()}, torch {torch.__version__}, "
            f"ray {ray.__version__}, optuna {optuna.__version__}, numpy {numpy.__version__}")


def head_commit() -> str:
    """The checked-out commit (short), recorded beside results so a report can tell when its code changed."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def changed_files(commit: str, paths: list[str]) -> list[str]:
    """The entries of `paths` whose code differs between `commit` and the working tree: a path (relative to the
    repo) names its changed files; "file.py::name" a top-level function, class or assignment of a Python file,
    changed where its source text is (so a benchmark's measuring code is told apart from its rendering)."""
    files = [p for p in paths if "::" not in p]
    out = subprocess.run(["git", "diff", "--name-only", commit, "--", *files], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split() if files else []
    return out + [p for p in paths if "::" in p and _definition(p, commit) != _definition(p, None)]


def _source(path: str, commit: str | None) -> str | None:
    """A file's text at `commit` (None: the working tree), None where it is not there."""
    if commit is None:
        return (ROOT / path).read_text() if (ROOT / path).exists() else None
    return _committed(path, commit)


@functools.lru_cache(maxsize=None)
def _committed(path: str, commit: str) -> str | None:
    """`git show commit:path`, once per file and commit (a report asks for the same file once per definition)."""
    r = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def _defined(node) -> list[str]:
    """The names a top-level statement defines: a function's or class's, an assignment's targets."""
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [n.id for t in targets for n in (t.elts if isinstance(t, ast.Tuple) else [t]) if isinstance(n, ast.Name)]


def _definition(entry: str, commit: str | None) -> str | None:
    """The source text of "file.py::name" at `commit` (None: the working tree); None where it is not there."""
    path, name = entry.split("::")
    text = _source(path, commit)
    if text is None:
        return None
    for node in ast.parse(text).body:
        if name in _defined(node):
            return ast.get_source_segment(text, node)
    return None


def changed_since(commit: str, paths: list[str]) -> bool:
    """Whether any of `paths` (relative to the repo) differs between `commit` and the working tree."""
    return bool(changed_files(commit, paths))


def record_meta(store: dict, section: str, command: str, measures: tuple[str, ...]) -> None:
    """Note in `store` (a docs/data file's content) what produced `section`: the command, the commit (with
    "+dirty" where the code it measures had uncommitted changes), the machine and the date (benchmarks.report
    renders these and refuses a section without them). A section topped up by a later run keeps the earlier
    commit where the code it measures changed in between: part of it was measured there."""
    import datetime

    metas = store.setdefault("_meta", {})
    old = metas.get(section, {}).get("commit", "")
    if old and (old.endswith("+dirty") or changed_since(old, list(measures))):
        return
    commit = head_commit() + ("+dirty" if changed_since("HEAD", list(measures)) else "")
    metas[section] = {"command": command, "commit": commit, "machine": machine(),
                      "date": datetime.date.today().isoformat()}


def md_table(header: list[str], rows) -> list[str]:
    """A markdown table's lines: the header, its rule, one line per row (each cell as str() gives it)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def benchmark_parser(doc: str, name: str):
    """A benchmark's argument parser (its module docstring as help), with `--data PATH`: where its results go
    (default docs/data/<name>.json)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA / f"{name}.json",
                    help=f"results file (default docs/data/{name}.json; another path: the section is printed, "
                         "docs/BENCHMARKS.md left as it is, e.g. for a trial run)")
    return ap


def command_of(name: str, args, options: tuple[str, ...]) -> str:
    """The command that measured: `python -m benchmarks.<name>` with each of `options` as parsed (not --data)."""
    flag = lambda v: " ".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    return " ".join([f"python -m benchmarks.{name}",
                     *(f"--{o.replace('_', '-')} {flag(getattr(args, o))}" for o in options)])


def save_results(path: Path, section: str, data: dict, command: str, measures: tuple[str, ...], render) -> None:
    """Note what produced `section` in `data` (record_meta), write `data` to `path` and re-render
    docs/BENCHMARKS.md where `path` is the section's docs/data file; elsewhere print the section instead."""
    import json

    from benchmarks import report

    record_meta(data, section, command, measures)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    if path.resolve() == (DATA / path.name).resolve():
        report.main([])
    else:
        print(f"wrote {path}\n\n{render(data)}")


def data_sections(name: str, title: str, measures: tuple[str, ...], render, targets=None) -> list:
    """The one report section of docs/data/<name>.json (named `name`, its legacy block's name), none while that
    file does not exist."""
    from benchmarks.report import Section

    if not (DATA / f"{name}.json").exists():
        return []
    return [Section(name, title, name, measures, render, targets or (lambda data: []))]


def save_figure(fig, name: str) -> str:
    """Save a matplotlib figure under docs/img/ and return its path relative to docs/."""
    img = DOC.parent / "img" / name
    img.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(img, dpi=110)
    return f"img/{name}"


def latency_words(runtime: str) -> str:
    """How a result's latency was measured, for a section's preamble."""
    if runtime == "c":
        return ("batch-1 `act()` timed inside the C kernel over recorded states, 1 thread, teacher in alternating "
                "rounds (ratio: median of the per-round ratios)")
    return "batch-1 `act()` timed as the Python call to the numpy runtime, 1 thread, teacher timed alternately"


def write_section(name: str, body: str) -> None:
    """Print `body`, replace (or append) the section between <!-- name --> markers in docs/legacy.md (the
    sections not yet rendered from data: benchmarks.report carries them verbatim), and re-render the report."""
    from benchmarks import report

    print(body, flush=True)
    legacy = report.LEGACY
    text = legacy.read_text() if legacy.exists() else ""
    block = f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    legacy.write_text(text)
    report.main([])


def run_search(space: dict, trial_overrides: dict, run_dir: Path, base: str = "cartpole_ppo", **options):
    """Run a search (`autocompress.search`) on a space derived from search_spaces/<base>.yaml.

    `space` overrides keys of the shipped space, `trial_overrides` keys of its trial spec (e.g. a
    cheaper fine-tune); `options` go to `autocompress.search`. The teacher is shared through the
    default cache. Returns (wall seconds, the Run); the run dir is run_dir/run.
    """
    import time

    import yaml

    import autocompress as ac

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    shipped = yaml.safe_load((ROOT / "search_spaces" / f"{base}.yaml").read_text())
    trial = yaml.safe_load((ROOT / "search_spaces" / shipped["trial_spec"]).resolve().read_text())
    for k, v in trial_overrides.items():
        trial[k] = {**trial.get(k, {}), **v} if isinstance(v, dict) else v
    (run_dir / "trial.yaml").write_text(yaml.safe_dump(trial))
    sp = {**shipped, **space, "trial_spec": "trial.yaml"}
    (run_dir / "space.yaml").write_text(yaml.safe_dump(sp))
    t0 = time.time()
    run = ac.search(run_dir / "space.yaml", run_dir=run_dir / "run", cache_dir=ac.default_cache(), **options)
    return time.time() - t0, run


def choose_on_a_report_on_b(run, episodes: int, min_ratio: float = 0.95) -> dict:
    """A search's best front point, chosen on set A and reported on set B: the front re-evaluated on `episodes`
    set-A episodes; of its points whose return there is >= min_ratio x the teacher's, the fewest bytes (then the
    lowest latency ratio); that point re-evaluated on `episodes` set-B episodes, which it was not chosen on.
    {"front": {trial: its ResultRow}, "on_a": {trial: re-evaluation}, "best": trial or None, "on_b": None or its
    re-evaluation on B (the teacher's under "teacher")}."""
    on_a = run.reevaluate(episodes=episodes, seed=A_SEED)
    front = {r.trial: r for r in run.front()}
    ok = [t for t in front if on_a[t]["return_ratio"] >= min_ratio]
    best = min(ok, key=lambda t: (front[t].bytes, front[t].latency_ratio), default=None)
    on_b = None if best is None else run.reevaluate([best], episodes=episodes, seed=SET_B_SEED)
    return {"front": front, "on_a": on_a, "best": best,
            "on_b": None if on_b is None else {**on_b[best], "teacher": on_b.get("teacher")}}


def search_imported(d: Path, spec: dict, techniques: dict, trials: int, episodes: int) -> dict:
    """Search a policy trained elsewhere: `spec` (a trial spec whose teacher is `from:` a file in `d`) written to
    d/trial.yaml, a space of `techniques` (min_return_ratio 0.9, 2 trials at once, seed 0) searched for `trials`
    trials; its best point chosen on set A and reported on set B (choose_on_a_report_on_b), and where the
    compressed trials' time went (their timed stages, summed)."""
    import time

    import yaml

    import autocompress as ac

    (d / "trial.yaml").write_text(yaml.safe_dump(spec))
    space = {"name": spec["name"], "trial_spec": "trial.yaml", "constraints": {"min_return_ratio": 0.9},
             "budget": {"trials": trials, "parallel": 2}, "seed": 0, "techniques": techniques}
    (d / "space.yaml").write_text(yaml.safe_dump(space))
    t0 = time.time()
    run = ac.search(d / "space.yaml", run_dir=d / "run")
    wall = time.time() - t0
    chosen = choose_on_a_report_on_b(run, episodes)
    rows = run.rows()
    timed = [r for r in rows if r["config"] and r.get("timings")]
    stages: dict[str, float] = {}
    for r in timed:
        for k, v in r["timings"].items():
            stages[k] = stages.get(k, 0.0) + v
    best, teacher = chosen["best"], next(r for r in rows if not r["config"])
    return {"wall_s": wall, "complete": run.summary["complete"], "stopped": run.summary["stopped"],
            "teacher_return": teacher["return_mean"], "runtime": teacher.get("runtime", "numpy"),
            "trial_seconds": sum(r["trial_seconds"] for r in timed), "stages": stages, "stages_own": True,
            "best": None if best is None else {
                "trial": best, "config": chosen["front"][best].config,
                "ratio_a": chosen["on_a"][best]["return_ratio"], "ratio_b": chosen["on_b"]["return_ratio"],
                "bytes_ratio": chosen["front"][best].bytes_ratio, "latency_ratio": chosen["front"][best].latency_ratio}}


def heldout_setup(base: str, episodes: int, store_name: str):
    """(the shipped spec of search_spaces/<base>.yaml, that spec evaluating on `episodes` held-out episodes,
    the path of docs/data/<store_name>.json, what it holds so far): a benchmark that measures recipes on the
    seeds where the front is re-evaluated, keeping measurements as they finish so a re-run reuses them."""
    import json

    import yaml

    import autocompress as ac

    shipped = yaml.safe_load((ROOT / "search_spaces" / f"{base}.yaml").read_text())
    spec = ac.load_trial_spec((ROOT / "search_spaces" / shipped["trial_spec"]).resolve())
    held = spec.updated({"eval": {"seed": spec.eval.heldout_seed, "episodes": episodes, "heldout_episodes": 0}})
    store = ROOT / "docs" / "data" / f"{store_name}.json"
    store.parent.mkdir(parents=True, exist_ok=True)
    return spec, held, store, (json.loads(store.read_text()) if store.exists() else {})
