"""`autocompress` command line: a thin typer layer over package functions."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import autocompress as ac
from autocompress import SAMPLERS, AutocompressError

app = typer.Typer(
    help="Compress deep-RL policies automatically: quantization, pruning, weight sharing, low-rank and "
         "distillation, fine-tuned in RLlib, searched with Optuna, tracked in MLflow.\n\n"
         "Typical use:\n\n"
         "  autocompress teach trials/cartpole_ppo.yaml\n\n"
         "  autocompress compress trials/cartpole_ppo.yaml --config configs/int8_ptq.yaml",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    rich_markup_mode=None)  # help texts say "[default: ...]": print brackets as written, not as markup
# Not a terminal (pipes, `ray job submit` logs, CI): no wrapping at 80 columns, one line per message.
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=100_000)
out = Console() if sys.stdout.isatty() else Console(width=160)


def fail(msg: str, code: int = 2) -> None:
    # msg is plain text (paths, URLs, flag values): "[...]" and ":name:" in it are not markup or emoji
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True, emoji=False)
    raise typer.Exit(code)


@contextmanager
def errors_as_exit_codes():
    """autocompress's own errors -> one line naming the flag, and the exit code of their cause
    (docs/guides/tune-a-search.md: 2 bad input, 3 teacher, 4 tracking, 5 trial). Anything else is a bug: traceback."""
    try:
        yield
    except AutocompressError as e:
        msg = e.args[0] if e.args else str(e)
        fail(f"--{e.option.replace('_', '-')}: {msg}" if e.option else msg, e.exit_code)


CacheOpt = typer.Option(None, "--cache-dir", help="teacher cache [default: $AUTOCOMPRESS_CACHE or "
                                                  "~/.cache/autocompress/teachers]")


@app.command()
def teach(trial_spec: Path = typer.Argument(..., help="trial spec YAML, e.g. trials/cartpole_ppo.yaml"),
          cache_dir: Optional[Path] = CacheOpt,
          retrain: bool = typer.Option(False, help="train again even if a cached teacher exists")):
    """Train (or load from the cache) the trial spec's teacher with RLlib and print its return."""
    with errors_as_exit_codes():
        teacher = ac.teach(trial_spec, cache_dir=cache_dir, retrain=retrain, log=err.print)
        spec = ac.load_trial_spec(trial_spec)
        r = ac.evaluate(ac.Policy.from_bytes(teacher.artifact(), "numpy"), spec)
    source = teacher.info.get("source")
    how = (f"imported from {source['format']} {source['algorithm']} {source['path']}" if source else
           f"trained {teacher.info['iterations']} iterations in {teacher.info['train_seconds']:.0f} s")
    out.print(f"teacher {teacher.path}\n  {how}\n  return over {len(r)} seeded episodes: {r.mean():.1f} ± {r.std():.1f}")


TargetOpt = typer.Option(None, "--target", help="where the policy runs: host (timed in process) | cortex-m0plus | "
                         "cortex-m4f | cortex-m7 (cross-built, cycles counted in an emulator; needs "
                         "arm-none-eabi-gcc) [default: the space's / trial spec's target, else host]")


@app.command()
def compress(trial_spec: Path = typer.Argument(..., help="trial spec YAML"),
             config: Path = typer.Option(..., "--config", "-c", help="techniques YAML, e.g. "
                                         "{prune: {sparsity: 0.9}, quantize: {bits: 4, mode: qat}}"),
             output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o",
                                                       help="where policy.acz and result.json go "
                                                            "[default: runs/compress/<spec>-<config>]"),
             cache_dir: Optional[Path] = CacheOpt, target: Optional[str] = TargetOpt,
             as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table")):
    """Run one full trial: teacher (cached) -> techniques -> RLlib fine-tune -> export -> measure."""
    with errors_as_exit_codes():
        result = ac.compress(trial_spec, config, output_dir=output_dir, cache_dir=cache_dir, target=target,
                             log=err.print)
    if as_json:  # result.json as written: the measurements and the techniques config
        sys.stdout.write(json.dumps(json.loads((Path(result.artifact).parent / "result.json").read_text())) + "\n")
        return
    out.print(result_table(result, f"{trial_spec.stem} / {config.name}"))
    if result.target != "host":
        out.print(f"on {result.cpu}: {result.cycles:,.0f} cycles per act (teacher {result.teacher_cycles:,.0f}), "
                  f"flash {result.flash:,} B (teacher {result.teacher_flash:,}), RAM {result.ram:,} B; kernels "
                  f"{', '.join(result.kernels)}; emulated actions equal the evaluated runtime's on "
                  f"{result.device_agreement:.1%} of the recorded states")
    out.print(f"artifact: {result.artifact} (return measured in the {result.runtime} runtime, latency "
              f"{'in cycles on ' + result.target if result.target != 'host' else 'in it'})")


def result_table(r, title: str) -> Table:
    t = Table(title=title)
    for col in ("", "return", "latency ms (median)" if r.target == "host" else f"latency ms (cycles at "
                f"the {r.target} clock)", "bytes", "gzip bytes", "params"):
        t.add_column(col, justify="right")
    t.add_row("teacher", f"{r.teacher_return_mean:.1f} ± {r.teacher_return_std:.1f}",
              f"{r.teacher_latency_ms:.4f}", f"{r.teacher_bytes:,}", f"{r.teacher_gzip_bytes:,}",
              f"{r.teacher_n_params:,}")
    t.add_row("compressed", f"{r.return_mean:.1f} ± {r.return_std:.1f}", f"{r.latency_ms:.4f}",
              f"{r.bytes:,}", f"{r.gzip_bytes:,}", f"{r.n_params:,}")
    t.add_row("ratio", f"{r.return_ratio:.3f}", f"{r.latency_ratio:.3f}", f"{r.bytes_ratio:.4f}",
              f"{r.gzip_bytes / r.teacher_gzip_bytes:.4f}", f"{r.n_params / r.teacher_n_params:.4f}")
    return t


#: the techniques layer sensitivity sweeps and their default values, as their configs declare (`sweep`)
_SWEEPS = {name: c.sweep for name, c in ac.TECHNIQUES.items() if c.sweep}


@app.command()
def sensitivity(trial_spec: Path = typer.Argument(..., help="trial spec YAML, e.g. trials/cartpole_dqn.yaml"),
                techniques: Optional[str] = typer.Option(None, "--techniques", "-t",
                                                         help=f"comma-separated, of {', '.join(_SWEEPS)} "
                                                              "[default: all]"),
                settings: Optional[list[str]] = typer.Option(None, "--settings", "-s", metavar="TECH=V1,V2",
                                                             help="the values to sweep for one technique, e.g. "
                                                                  "quantize=2,4,8 (repeat for others) [default: "
                                                                  + "; ".join(f"{t} {','.join(f'{v:g}' for v in vs)}"
                                                                              for t, vs in _SWEEPS.items()) + "]"),
                episodes: int = typer.Option(5, "--episodes", min=0, max=100, help="seeded episodes per (layer, setting), "
                                             "seeds 300000+ (0: action agreement and KL only)"),
                output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="where sensitivity.json, "
                                                          "sensitivity.png and the default MLflow store go "
                                                          "[default: runs/sensitivity/<spec name>]"),
                cache_dir: Optional[Path] = CacheOpt,
                tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                                           help="MLflow tracking URI [default: sqlite in the "
                                                                "output dir]"),
                as_json: bool = typer.Option(False, "--json", help="print the table as one JSON object")):
    """How much each layer can take: compress ONE layer with ONE setting (no fine-tune) and measure the
    policy's drop against the teacher: action agreement and KL on the teacher's visited states, return
    on a few seeded episodes. Writes a table (JSON) and a heatmap (PNG), logged to an MLflow run
    `sensitivity`. A search does the same as its first stage with `sensitivity: {enabled: true}`.

    e.g. autocompress sensitivity trials/cartpole_dqn.yaml --techniques quantize,prune --settings quantize=2,4,8
    """
    with errors_as_exit_codes():
        names = [t.strip() for t in techniques.split(",") if t.strip()] if techniques is not None else None
        table = _with_bar("sensitivity", lambda progress: ac.sensitivity(
            trial_spec, techniques=names, settings=settings or None, episodes=episodes, output_dir=output_dir,
            cache_dir=cache_dir, tracking_uri=tracking_uri, log=err.print if not err.is_terminal else lambda m: None,
            progress=progress))
    if as_json:
        sys.stdout.write(json.dumps(table) + "\n")
        return
    for t in table["techniques"]:
        out.print(sensitivity_table(table, t))
    how = "max(1 - agreement, 1 - return ratio)" if table["episodes"] else "1 - agreement"
    out.print(f"drop of the policy with only that layer compressed, no fine-tune: {how} (green <= 0.05, yellow "
              "<= 0.2, red above)", soft_wrap=True, highlight=False)
    ml = table["mlflow"]
    out.print(f"wrote {table['files'][0]} and {table['files'][1]}; MLflow run {ml['run_id']} (experiment "
              f"{ml['experiment']!r}) in {ml['tracking_uri']}", soft_wrap=True, highlight=False, markup=False)


def sensitivity_table(table: dict, technique: str) -> Table:
    """One technique's drops: a row per layer, a column per setting (least to most aggressive)."""
    info = table["techniques"][technique]
    t = Table(title=f"{technique}.{info['key']}")
    t.add_column("layer", justify="left")
    for s in info["settings"]:
        t.add_column(f"{s:g}", justify="right")
    rows = {(r["layer"], r["setting"]): r for r in table["rows"] if r["technique"] == technique}
    for i in sorted({layer for layer, _ in rows}):
        cells = []
        for s in info["settings"]:
            d = rows[(i, s)]["drop"] if (i, s) in rows else None
            color = "green" if d is not None and d <= 0.05 else "yellow" if d is not None and d <= 0.2 else "red"
            cells.append("-" if d is None else f"[{color}]{d:.3f}[/]")
        t.add_row(table["layers"][i]["label"], *cells)
    return t


def _with_bar(name: str, fn, first: str = "teacher ..."):
    """`fn(progress)` with a live bar of progress(done, total, what) on a terminal (`first`: what it shows
    before the first call); elsewhere (a `ray job submit` log, CI) no bar, only the command's own lines."""
    if not err.is_terminal:
        return fn(lambda done, total, what: None)
    with Progress(TextColumn(f"[bold]{name}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.description}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=err) as bar:
        task = bar.add_task(first, total=None)
        return fn(lambda done, total, what: bar.update(task, completed=done, total=total, description=what))


@app.command()
def validate(file: Path = typer.Argument(..., help="a trial spec (trials/*.yaml), a search space or a "
                                                   "techniques config"),
             episodes: int = typer.Option(10, "--episodes", min=0,
                                          help="a trial spec that imports its teacher (teacher.from): seeded "
                                               "episodes to compare the imported policy with its source on "
                                               "(0: check the file only, not the teacher)")):
    """Check a YAML file and say exactly what is wrong with it (exit code 2 if anything is). A trial spec
    or search space whose teacher is imported, cached or committed: the teacher must clearly beat a
    uniform-random policy on the evaluation episodes (exit code 3 if not, with both returns). For a trial
    spec that imports a teacher, also report what was imported and how it acts next to its source."""
    with errors_as_exit_codes():
        kind = ac.validate(file, teacher=episodes > 0)
        report = ac.inspect_import(file, episodes=episodes) if kind == "trial spec" and episodes and \
            ac.load_trial_spec(file).teacher.from_ else None
    out.print(f"{file}: valid {kind}")
    if report:
        out.print(f"  imported {report['format']} {report['algorithm']} policy (fine-tuned as "
                  f"{report['fine_tuned_as']}): {' | '.join(report['layers'])}\n"
                  f"  {report['n_params']:,} parameters, artifact {report['artifact_bytes']:,} bytes; critic: "
                  f"{report['critic']}; observation normalisation: {'yes' if report['obs_norm'] else 'no'}\n"
                  f"  return over {report['episodes']} seeded episodes (seed {report['seed']}): autocompress "
                  f"{report['runtime']} runtime {report['return']:.1f} ± {report['return_std']:.1f}, source "
                  f"{report['source_return']:.1f} ± {report['source_return_std']:.1f}; same action on "
                  f"{report['action_agreement']:.1%} of 500 source-visited states")


@app.command()
def search(space_file: Path = typer.Argument(..., help="search space YAML, e.g. search_spaces/cartpole_ppo.yaml"),
           trials: Optional[int] = typer.Option(None, "--trials", "-n", help="finished trials wanted [default: "
                                                "the space's budget.trials]", min=1),
           parallel: Optional[int] = typer.Option(None, "--parallel", "-p", help="trials at once [default: "
                                                  "budget.parallel]", min=1),
           run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="study, MLflow store and artifacts "
                                                  "[default: runs/<space name>]"),
           storage: Optional[str] = typer.Option(None, "--storage", envvar="AUTOCOMPRESS_STORAGE",
                                                 help="Optuna storage URL, e.g. postgresql://user:pw@host/db "
                                                      "[default: journal file in the run dir]. Prefer the env "
                                                      "var for passwords: command lines get echoed (ray job "
                                                      "submit prints its entrypoint)"),
           tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                                      help="MLflow tracking URI, e.g. http://host:5000 "
                                                           "[default: sqlite in the run dir]"),
           sampler: Optional[str] = typer.Option(None, "--sampler", help=f"{' | '.join(SAMPLERS)} [default: the "
                                                 "space's sampler]. " + "; ".join(f"{k}: {v.help}" for k, v in
                                                                                  SAMPLERS.items())),
           seed: Optional[int] = typer.Option(None, "--seed", help="sampler seed [default: the space's seed]",
                                              min=0, max=2**32 - 1),
           resume: bool = typer.Option(False, "--resume", help="continue the search in --run-dir: COMPLETE "
                                       "trials are kept, trials left RUNNING are marked FAIL and asked again "
                                       "(only when no other driver is running on the study)"),
           join: bool = typer.Option(False, "--join", help="add trials to a study other drivers are running "
                                     "(same --storage, or the same --run-dir): no baselines, RUNNING trials are "
                                     "left alone, --trials counts every driver's trials"),
           warm_start: Optional[Path] = typer.Option(None, "--warm-start", metavar="RUN_DIR",
                                                     help="start from an earlier search of the same env and "
                                                     "algorithm: its trials measured on the same spec and teacher "
                                                     "are copied in (free), its other front members are enqueued "
                                                     "and re-measured"),
           cache_dir: Optional[Path] = CacheOpt, target: Optional[str] = TargetOpt):
    """Multi-objective search (Optuna) over technique combinations; trials run in parallel on Ray,
    every trial and the Pareto front are logged to MLflow.

    Locally this starts Ray on this machine; with RAY_ADDRESS set, or under `ray job submit`,
    it joins that cluster. Open the results with the command printed at the end
    (`mlflow ui --backend-store-uri ...`), then `autocompress pareto|pick|export RUN_DIR`.
    """
    with errors_as_exit_codes():
        run = _with_bar("search", lambda bar: ac.search(
            space_file, trials=trials, parallel=parallel, run_dir=run_dir, storage=storage,
            tracking_uri=tracking_uri, sampler=sampler, seed=seed, resume=resume, join=join, cache_dir=cache_dir,
            warm_start=warm_start, target=target, progress=lambda s: bar(s["done"], s["target"], _search_status(s)),
            log=err.print), first="starting")
    summary = run.summary
    if summary["tracking_offline"]:
        err.print(f"[yellow]MLflow went offline mid-search[/] ({summary['tracking_offline']}): every result is in the "
                  f"study; `autocompress sync {run.run_dir}` logs what MLflow missed", highlight=False)
    out.print(f"{summary['complete']} complete, {summary['failed']} failed, {summary['stopped']} stopped early, "
              f"front of {len(summary['front'])}, "
              f"hypervolume {summary['hypervolume'] or 0:.4f}, {summary['wall_seconds']:.0f} s")
    out.print(front_table(run.front(), "Pareto front"))
    floor = summary.get("latency_noise_floor")
    if floor:  # beside the front: latency ratios closer than this to each other are the machine's noise
        out.print(f"latency noise floor: the teacher timed against itself {floor['repeats']} times measured "
                  f"{floor['min']:.3f}-{floor['max']:.3f}x; nets of one compute signature share one timing",
                  highlight=False)
    for line in run.where_to_look():
        out.print(line, soft_wrap=True, highlight=False, markup=False)


def _search_status(s: dict) -> str:
    """The search driver's progress report (its status()) as the bar's description."""
    return (f"running {s['running']} failed {s['failed']} stopped {s['stopped']} front {s['front']} "
            f"HV {s['hypervolume']:.3f}")


def front_table(front: list, title: str, reference=None) -> Table:
    """The front, with held-out return columns where its rows have them, and the fine-tuned teacher
    (`reference`, a row that is no trial) last."""
    held = any(r.heldout_return_ratio is not None for r in front)
    device = next((r.target for r in front if r.target != "host"), None)
    t = Table(title=title + (f"; latency: cycles on {device} at its clock" if device else ""))
    cols = ["trial", "techniques", "return", "ratio"] + (["held-out return", "ratio"] if held else []) + \
        ["latency µs", "ratio", "bytes", "ratio"] + (["cycles", "flash", "RAM"] if device else [])
    for col in cols:
        t.add_column(col, justify="right" if col != "techniques" else "left", overflow="fold")
    for r in front + ([reference] if reference is not None else []):
        is_ref = r is reference
        cells = ["ref" if is_ref else str(r.trial),
                 "teacher fine-tuned (reference, not a trial)" if is_ref else _techniques_text(r.config),
                 f"{r.return_mean:.1f}", f"{r.return_ratio:.3f}"]
        if held:
            cells += ["-", "-"] if r.heldout_return_ratio is None else \
                [f"{r.heldout_return_mean:.1f} ± {r.heldout_return_std:.1f}", f"{r.heldout_return_ratio:.3f}"]
        cells += [f"{r.latency_ms * 1000:.2f}", f"{r.latency_ratio:.3f}", f"{r.bytes:,}", f"{r.bytes_ratio:.4f}"]
        if device:
            cells += ["-", "-", "-"] if r.cycles is None else [f"{r.cycles:,.0f}", f"{r.flash:,}", f"{r.ram:,}"]
        t.add_row(*cells)
    return t


def heldout_note(held: dict | None) -> str:
    """What a table title says about the returns it constrains on."""
    if not held:
        return "return on the evaluation episodes"
    n, seed = held["episodes"], held["seed"]
    return (f"held-out return: {n} episodes, seeds {seed}..{seed + n - 1}, teacher "
            f"{held['teacher']['return_mean']:.1f} ± {held['teacher']['return_std']:.1f}")


def _techniques_text(cfg: dict) -> str:
    if not cfg:
        return "teacher as-is"
    return "; ".join(f"{k}(" + ", ".join(f"{a}={_short(v)}" for a, v in p.items()) + ")" for k, p in cfg.items())


def _short(v):
    if isinstance(v, list):  # a per-layer setting
        return "[" + ", ".join(str(_short(x)) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return f"{v:.3g}" if isinstance(v, float) else v


RunDirArg = typer.Argument(..., help="a search's --run-dir, e.g. runs/cartpole_ppo")
StorageOpt = typer.Option(None, "--storage", envvar="AUTOCOMPRESS_STORAGE",
                          help="the Optuna storage URL, if the search used --storage")


@app.command("pareto")
def pareto_cmd(run_dir: Path = RunDirArg, as_json: bool = typer.Option(False, "--json"),
               storage: Optional[str] = StorageOpt,
               reevaluate: Optional[int] = typer.Option(None, "--reevaluate", metavar="N", min=1,
                                                        help="first re-evaluate the front, the teacher (and the "
                                                             "reference) on N held-out episodes (seeds from the "
                                                             "spec's eval.heldout_seed) and store the values in the "
                                                             "study and MLflow"),
               parallel: bool = typer.Option(False, "--parallel", help="with --reevaluate: one Ray task per "
                                             "policy (starts Ray, or joins RAY_ADDRESS)"),
               tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                                          help="with --reevaluate: the MLflow tracking URI "
                                                               "[default: the one the search used]")):
    """Print the Pareto front of a search, with ratios against the teacher; with held-out values
    (the end of a search, or --reevaluate N) their returns too, and the fine-tuned teacher's row
    if the search made one (finetune.teacher_reference)."""
    with errors_as_exit_codes():
        run = ac.Run.load(run_dir, storage)
        if reevaluate is not None:
            run.evaluate_heldout(reevaluate, parallel=parallel, tracking_uri=tracking_uri, log=err.print)
        front, reference, held = run.front(), run.reference(), run.heldout()
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in front]) + "\n")
    else:
        if held is None and any(r.heldout_return_ratio is not None for r in front):
            err.print("held-out values are missing for some front members (the front changed since): "
                      f"autocompress pareto {run_dir} --reevaluate N", highlight=False)
        out.print(front_table(front, f"Pareto front of {run_dir} ({', '.join(run.objectives)}); "
                                     f"{heldout_note(held)}", reference))


def pick_return_lines(row) -> list[str]:
    """What `pick` says of a picked row's return: the ratio it was chosen on, then on the fresh episodes."""
    mean = row.heldout_return_mean if row.chosen_on == "held-out" else row.return_mean
    chosen = (f"chosen on {row.chosen_episodes} {row.chosen_on} episodes: ratio {row.chosen_return_ratio:.3f} "
              f"(return {mean:.1f})")
    if row.chosen_on != "held-out":
        chosen += "; no held-out values (`autocompress pareto RUN --reevaluate N` adds them)"
    if row.fresh_episodes is None:
        return [chosen, "no fresh episodes (eval.fresh_episodes: 0): the return above is the one it was chosen on"]
    return [chosen, f"on {row.fresh_episodes} fresh episodes it was not chosen on: ratio {row.fresh_return_ratio:.3f} "
                    f"(return {row.fresh_return_mean:.1f} ± {row.fresh_return_std:.1f} std, teacher "
                    f"{row.fresh_teacher_return_mean:.1f})"]


class Minimize(str, Enum):
    latency = "latency"
    bytes = "bytes"


@app.command()
def pick(run_dir: Path = RunDirArg,
         min_return_ratio: float = typer.Option(0.95, help="keep trials with return >= this × teacher's"),
         minimize: Minimize = typer.Option(Minimize.latency, help="latency | bytes"),
         max_bytes: Optional[float] = typer.Option(None, help="artifact size limit", min=0),
         max_latency_ms: Optional[float] = typer.Option(None, help="batch-1 latency limit, ms", min=0),
         max_flash: Optional[int] = typer.Option(None, help="an MCU target's flash limit, bytes", min=1),
         max_ram: Optional[int] = typer.Option(None, help="an MCU target's RAM limit, bytes", min=1),
         as_json: bool = typer.Option(False, "--json"), storage: Optional[str] = StorageOpt,
         register: Optional[str] = typer.Option(None, "--register", metavar="NAME",
                                                help="also register the picked trial's MLflow model (its run's "
                                                     "`policy`) as a new version of NAME in the MLflow Model "
                                                     "Registry, its measurements as version tags"),
         alias: str = typer.Option("champion", "--alias", help="with --register: the alias set to the new version"),
         tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                                    help="with --register: the MLflow tracking URI [default: the "
                                                         "one the search used]")):
    """Pick the best trial under constraints; prints its config as YAML for `compress --config`.
    Where the front has held-out values (`pareto --reevaluate`), --min-return-ratio holds for them (else
    for the evaluation episodes); where no re-evaluated trial keeps it, the trials the front dominated are
    re-evaluated at it first. A return chosen on is optimistic, so pick shows both: the ratio it chose
    on, and the trial's and the teacher's return on the spec's eval.fresh_episodes episodes it was not
    chosen on (run once per trial, kept in the study).
    With --register NAME, the trial's MLflow model becomes a new version of NAME (alias --alias)."""
    with errors_as_exit_codes():
        run = ac.Run.load(run_dir, storage)
        row = run.pick(min_return_ratio=min_return_ratio, minimize=minimize.value, max_bytes=max_bytes,
                       max_latency_ms=max_latency_ms, max_flash=max_flash, max_ram=max_ram, log=err.print)
        version = run.register(row.trial, register, alias=alias, tracking_uri=tracking_uri, log=err.print) \
            if register is not None else None
    if version:
        err.print(f"registered trial {row.trial} as {version['name']} version {version['version']}, alias "
                  f"{version['alias']}: mlflow.pyfunc.load_model({version['model_uri']!r})", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps({**row.to_dict(), **({"registered": version} if version else {})}) + "\n")
        return
    held = row.chosen_on == "held-out"
    err.print(f"trial {row.trial}: latency {row.latency_ms * 1000:.2f} µs (×{row.latency_ratio:.3f}), "
              f"{row.bytes:,} bytes (×{row.bytes_ratio:.4f})" + (
                  f"; on {row.target}: {row.cycles:,.0f} cycles per act, flash {row.flash:,} B, RAM {row.ram:,} B"
                  if row.cycles is not None else ""), highlight=False)
    for line in pick_return_lines(row):
        err.print("  " + line, highlight=False)
    ref = run.reference()
    if ref is not None:
        ref_ret = f"held-out ×{ref.heldout_return_ratio:.3f}" if held and ref.heldout_return_ratio is not None \
            else f"×{ref.return_ratio:.3f}"
        err.print(f"reference: the teacher fine-tuned with the same budget, no compression: return {ref_ret}")
    sys.stdout.write(f"# autocompress pick: trial {row.trial} of {run_dir}\n" + yaml.safe_dump(row.config))


@app.command()
def sync(run_dir: Path = RunDirArg, storage: Optional[str] = StorageOpt,
         tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                                    help="MLflow tracking URI [default: the one the search used]")):
    """Log to MLflow what it missed (e.g. the tracking server was down mid-search): every finished
    trial of the study gets its child run, then the pareto tags and the front's files. Idempotent:
    a second sync logs nothing new."""
    with errors_as_exit_codes():
        report = ac.sync(run_dir, storage=storage, tracking_uri=tracking_uri, log=err.print)
    out.print(f"synced {report['logged']} trial(s) to MLflow, {report['present']} already there; front of "
              f"{report['front']}; parent run {report['parent_run_id']}")


@app.command("export")
def export_cmd(run_dir: Path = RunDirArg, trial: int = typer.Option(..., "--trial", help="trial number", min=0),
               output: Path = typer.Option(..., "--output", "-o",
                                           help="file to write (for --format c: a directory)"),
               fmt: str = typer.Option("acz", "--format", "-f", help="acz: the artifact (autocompress.Policy.load); "
                                       "c: policy.c + policy.h + main.c (C99, no malloc); onnx: fp32 graph; "
                                       "onnx-int8: int8 weights, integer MatMul; tflite: fp32 TFLite (LiteRT, "
                                       "TFLite Micro); tflite-int8: full-integer int8 TFLite (calibrated int8 nets); "
                                       "pte: fp32 ExecuTorch program (XNNPACK); pte-int8: its int8 layers "
                                       "through XNNPACK's quantizer"),
               smallest: bool = typer.Option(False, "--smallest", help="with --format c: every layer in its "
                                             "smallest stored form (k-bit codes packed): least flash, slower"),
               storage: Optional[str] = StorageOpt, target: Optional[str] = TargetOpt):
    """Write a trial's policy in the form you ship: the .acz artifact, C source, ONNX, TFLite or ExecuTorch. acz, c and
    onnx act as the artifact did when the trial was measured. A trial measured on an MCU target exports
    (--format c) with a Makefile of its core's flags, and its flash, RAM and cycles per act are printed. Every
    other format prints the file's bytes and its batch-1 latency in its own runtime on this machine (onnxruntime,
    LiteRT, ExecuTorch; .acz: the C runtime) beside the .acz C runtime's, over 200 teacher-visited states
    (tflite: TFLite Micro's arena bytes too).

    e.g. autocompress export runs/cartpole_ppo --trial 7 --format c -o policy_c/
    """
    with errors_as_exit_codes():
        path = ac.export(run_dir, trial, output, format=fmt, smallest=smallest, storage=storage, target=target)
        run = ac.Run.load(run_dir, storage)
    try:
        lines = run.export_figures(trial, path, fmt)
    except Exception as e:  # (no teacher, a runtime missing, an unreadable run): the file is written all the same
        out.print(f"wrote {path}" + (f" ({path.stat().st_size:,} bytes)" if path.is_file() else "") +
                  f" from trial {trial}")
        err.print(f"  (not measured here: {type(e).__name__}: {e})", highlight=False, soft_wrap=True)
        return
    for line in lines:
        out.print(line, soft_wrap=True, highlight=False)  # one line each, never wrapped


if __name__ == "__main__":
    app()
