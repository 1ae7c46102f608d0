"""`autocompress` command line: a thin typer layer over package functions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from autocompress.errors import ConfigError

app = typer.Typer(
    help="Compress deep-RL policies automatically: quantization, pruning, weight sharing, low-rank and "
         "distillation, fine-tuned in RLlib, searched with Optuna, tracked in MLflow.\n\n"
         "Typical use:\n\n"
         "  autocompress teach trials/cartpole_ppo.yaml\n\n"
         "  autocompress compress trials/cartpole_ppo.yaml --config configs/int8_ptq.yaml",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True)
out = Console() if sys.stdout.isatty() else Console(width=160)  # no wrapping in pipes and logs


def default_cache() -> Path:
    return Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress" / "teachers"))


CacheOpt = typer.Option(None, "--cache-dir", help="teacher cache [default: $AUTOCOMPRESS_CACHE or "
                                                  "~/.cache/autocompress/teachers]")


def fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load_spec(path: Path):
    from autocompress.config import load_trial_spec

    spec = load_trial_spec(path)
    try:
        from autocompress import rl

        rl.check_training_keys(spec)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return spec


@app.command()
def teach(trial_spec: Path = typer.Argument(..., help="trial spec YAML, e.g. trials/cartpole_ppo.yaml"),
          cache_dir: Optional[Path] = CacheOpt,
          retrain: bool = typer.Option(False, help="train again even if a cached teacher exists")):
    """Train (or load from the cache) the trial spec's teacher with RLlib and print its return."""
    try:
        spec = _load_spec(trial_spec)
    except ConfigError as e:
        fail(str(e))
    from autocompress import envs, export, measure, rl
    from autocompress.runtime import NumpyPolicy

    teacher = rl.train_teacher(spec, cache_dir or default_cache(), log=err.print, retrain=retrain)
    policy = NumpyPolicy.from_bytes(export.to_bytes(teacher.actor, teacher.info["head"]))
    r = measure.evaluate(policy.act, envs.env_creator(spec.env, spec.env_config), spec.eval.episodes, spec.eval.seed)
    out.print(f"teacher {teacher.path}\n  trained {teacher.info['iterations']} iterations in "
              f"{teacher.info['train_seconds']:.0f} s\n  return over {len(r)} seeded episodes: "
              f"{r.mean():.1f} ± {r.std():.1f}")


@app.command()
def compress(trial_spec: Path = typer.Argument(..., help="trial spec YAML"),
             config: Path = typer.Option(..., "--config", "-c", help="techniques YAML, e.g. "
                                         "{prune: {sparsity: 0.9}, quantize: {bits: 4, mode: qat}}"),
             output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o",
                                                       help="where policy.acz and result.json go "
                                                            "[default: runs/compress/<spec>-<config>]"),
             cache_dir: Optional[Path] = CacheOpt,
             as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table")):
    """Run one full trial: teacher (cached) -> techniques -> RLlib fine-tune -> export -> measure."""
    from autocompress.config import load_compress_config

    try:
        spec = _load_spec(trial_spec)
        cfg = load_compress_config(config)
        cfg.check_against(spec)
    except ConfigError as e:
        fail(str(e))
    from autocompress.pipeline import compress_trial

    output_dir = output_dir or Path("runs") / "compress" / f"{spec.name}-{config.stem}"
    result = compress_trial(spec, cfg, output_dir, cache_dir or default_cache(), log=err.print)
    result["config"] = json.loads(cfg.model_dump_json(exclude_none=True))
    (output_dir / "result.json").write_text(json.dumps(result, indent=1))
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    out.print(result_table(result, f"{spec.name} / {config.name}"))
    out.print(f"artifact: {result['artifact']}")


def result_table(r: dict, title: str) -> Table:
    t = Table(title=title)
    for col in ("", "return", "latency ms (median)", "bytes", "gzip bytes", "params"):
        t.add_column(col, justify="right")
    t.add_row("teacher", f"{r['teacher_return_mean']:.1f} ± {r['teacher_return_std']:.1f}",
              f"{r['teacher_latency_ms']:.4f}", f"{r['teacher_bytes']:,}", f"{r['teacher_gzip_bytes']:,}",
              f"{r['teacher_params']:,}")
    t.add_row("compressed", f"{r['return_mean']:.1f} ± {r['return_std']:.1f}", f"{r['latency_ms']:.4f}",
              f"{r['bytes']:,}", f"{r['gzip_bytes']:,}", f"{r['params']:,}")
    t.add_row("ratio", f"{r['return_ratio']:.3f}", f"{r['latency_ratio']:.3f}", f"{r['bytes_ratio']:.4f}",
              f"{r['gzip_bytes'] / r['teacher_gzip_bytes']:.4f}", f"{r['params'] / r['teacher_params']:.4f}")
    return t


@app.command()
def validate(file: Path = typer.Argument(..., help="a trial spec (trials/*.yaml) or a techniques config")):
    """Check a YAML file and say exactly what is wrong with it (exit code 2 if anything is)."""
    from autocompress.config import load_compress_config, read_yaml

    try:
        data = read_yaml(file)
        if "env" in data:
            _load_spec(file)
            kind = "trial spec"
        elif "techniques" in data:
            from autocompress.space import load_search_space

            load_search_space(file)
            kind = "search space"
        else:
            load_compress_config(file)
            kind = "techniques config"
    except ConfigError as e:
        fail(str(e))
    out.print(f"{file}: valid {kind}")


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
           sampler: Optional[str] = typer.Option(None, "--sampler", help="tpe | nsga2 | gp | random "
                                                 "[default: the space's sampler]"),
           seed: Optional[int] = typer.Option(None, "--seed", help="sampler seed [default: the space's seed]"),
           resume: bool = typer.Option(False, "--resume", help="continue the search in --run-dir: COMPLETE "
                                       "trials are kept, trials left RUNNING are marked FAIL and asked again"),
           cache_dir: Optional[Path] = CacheOpt):
    """Multi-objective search (Optuna) over technique combinations; trials run in parallel on Ray,
    every trial and the Pareto front are logged to MLflow.

    Locally this starts Ray on this machine; with RAY_ADDRESS set, or under `ray job submit`,
    it joins that cluster. Open the results with the command printed at the end
    (`mlflow ui --backend-store-uri ...`), then `autocompress pareto|pick|export RUN_DIR`.
    """
    from autocompress.search import SearchOptions, make_sampler, run_search
    from autocompress.space import load_search_space

    try:
        space, spec, spec_path = load_search_space(space_file)
        opts = SearchOptions(run_dir=run_dir or Path("runs") / space.name, trials=trials or space.budget.trials,
                             parallel=parallel or space.budget.parallel, sampler=sampler or space.sampler,
                             seed=space.seed if seed is None else seed, storage=storage, tracking_uri=tracking_uri,
                             resume=resume, cache_dir=cache_dir,
                             fault_trials={int(x) for x in os.environ.get("AUTOCOMPRESS_FAULT_TRIALS", "").split(",")
                                           if x.strip()})
        make_sampler(opts.sampler, opts.seed)
        from autocompress import rl

        rl.check_training_keys(spec)
        summary = _with_progress(lambda progress: run_search(space, spec, space_file, spec_path, opts,
                                                             progress=progress, log=err.print))
    except (ConfigError, ValueError) as e:
        fail(str(e))
    out.print(f"{summary['complete']} complete, {summary['failed']} failed, front of {len(summary['front'])}, "
              f"hypervolume {summary['hypervolume'] or 0:.4f}, {summary['wall_seconds']:.0f} s")
    out.print(front_table(summary["front"], "Pareto front"))
    from autocompress.search import load_run

    _, state = load_run(opts.run_dir, storage)
    out.print(f"run dir: {opts.run_dir}\nMLflow UI: mlflow ui --backend-store-uri {state['tracking_uri']}")


def _with_progress(fn):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]search"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.description}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=err, transient=False) as bar:
        task = bar.add_task("starting", total=None)

        def progress(s: dict) -> None:
            bar.update(task, completed=s["done"], total=s["target"],
                       description=f"running {s['running']} failed {s['failed']} front {s['front']} "
                                   f"HV {s['hypervolume']:.3f}")

        return fn(progress)


def front_table(front: list[dict], title: str) -> Table:
    t = Table(title=title)
    for col in ("trial", "techniques", "return", "ratio", "latency µs", "ratio", "bytes", "ratio"):
        t.add_column(col, justify="right" if col != "techniques" else "left", overflow="fold")
    for r in front:
        t.add_row(str(r["trial"]), _techniques_text(r["params"]), f"{r['return_mean']:.1f}",
                  f"{r['return_ratio']:.3f}", f"{r['latency_ms'] * 1000:.2f}", f"{r['latency_ratio']:.3f}",
                  f"{r['bytes']:,}", f"{r['bytes_ratio']:.4f}")
    return t


def _techniques_text(cfg: dict) -> str:
    if not cfg:
        return "teacher as-is"
    return "; ".join(f"{k}(" + ", ".join(f"{a}={_short(v)}" for a, v in p.items()) + ")" for k, p in cfg.items())


def _short(v):
    return f"{v:.3g}" if isinstance(v, float) else v


RunDirArg = typer.Argument(..., help="a search's --run-dir, e.g. runs/cartpole_ppo")
StorageOpt = typer.Option(None, "--storage", envvar="AUTOCOMPRESS_STORAGE",
                          help="the Optuna storage URL, if the search used --storage")


@app.command("pareto")
def pareto_cmd(run_dir: Path = RunDirArg, as_json: bool = typer.Option(False, "--json"),
               storage: Optional[str] = StorageOpt):
    """Print the Pareto front of a search, with ratios against the teacher."""
    from autocompress.search import current_front, load_run, pareto_row

    try:
        study, state = load_run(run_dir, storage)
    except ConfigError as e:
        fail(str(e))
    front = [pareto_row(r) for r in current_front(study, state["objectives"])]
    if as_json:
        sys.stdout.write(json.dumps(front) + "\n")
    else:
        out.print(front_table(front, f"Pareto front of {run_dir} ({', '.join(state['objectives'])})"))


@app.command()
def pick(run_dir: Path = RunDirArg,
         min_return_ratio: float = typer.Option(0.95, help="keep trials with return >= this × teacher's"),
         minimize: str = typer.Option("latency", help="latency | bytes"),
         max_bytes: Optional[float] = typer.Option(None, help="artifact size limit"),
         max_latency_ms: Optional[float] = typer.Option(None, help="batch-1 latency limit, ms"),
         as_json: bool = typer.Option(False, "--json"), storage: Optional[str] = StorageOpt):
    """Pick the best trial under constraints; prints its config as YAML for `compress --config`."""
    import yaml

    from autocompress import pareto
    from autocompress.search import load_run, pareto_row, rows

    try:
        study, _ = load_run(run_dir, storage)
        best = pareto.pick(rows(study), min_return_ratio=min_return_ratio, minimize=minimize, max_bytes=max_bytes,
                           max_latency_ms=max_latency_ms)
    except (ConfigError, ValueError) as e:
        fail(str(e))
    row = pareto_row(best)
    if as_json:
        sys.stdout.write(json.dumps(row) + "\n")
        return
    err.print(f"trial {row['trial']}: return {row['return_mean']:.1f} (×{row['return_ratio']:.3f}), "
              f"latency {row['latency_ms'] * 1000:.2f} µs (×{row['latency_ratio']:.3f}), "
              f"{row['bytes']:,} bytes (×{row['bytes_ratio']:.4f})")
    sys.stdout.write(f"# autocompress pick: trial {row['trial']} of {run_dir}\n" + yaml.safe_dump(row["params"]))


@app.command("export")
def export_cmd(run_dir: Path = RunDirArg, trial: int = typer.Option(..., "--trial", help="trial number"),
               output: Path = typer.Option(..., "--output", "-o", help="where to write the .acz artifact"),
               storage: Optional[str] = StorageOpt):
    """Write the deployable artifact (.acz) of a trial; load it with autocompress.runtime.NumpyPolicy."""
    import shutil

    from autocompress.search import load_run, rows

    try:
        study, _ = load_run(run_dir, storage)
    except ConfigError as e:
        fail(str(e))
    match = [r for r in rows(study) if r["trial"] == trial]
    if not match:
        fail(f"trial {trial} is not a COMPLETE trial of {run_dir}")
    src = Path(match[0]["artifact"])
    if not src.exists():
        fail(f"artifact of trial {trial} is missing at {src}")
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, output)
    out.print(f"wrote {output} ({output.stat().st_size:,} bytes) from trial {trial}")


if __name__ == "__main__":
    app()
