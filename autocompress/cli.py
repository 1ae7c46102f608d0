"""`autocompress` command line: a thin typer layer over package functions."""

from __future__ import annotations

import json
import math
import os
import sys
from enum import Enum
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
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    rich_markup_mode=None)  # help texts say "[default: ...]": print brackets as written, not as markup
err = Console(stderr=True)
out = Console() if sys.stdout.isatty() else Console(width=160)  # no wrapping in pipes and logs


def default_cache() -> Path:
    return Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress" / "teachers"))


CacheOpt = typer.Option(None, "--cache-dir", help="teacher cache [default: $AUTOCOMPRESS_CACHE or "
                                                  "~/.cache/autocompress/teachers]")


def fail(msg: str) -> None:
    from rich.markup import escape

    # msg is plain text (paths, URLs, flag values): "[...]" and ":name:" in it are not markup or emoji
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True, emoji=False)
    raise typer.Exit(2)


# -- flag checks: each names its flag in one line, before anything is created, started or trained --

def _shown(url: str) -> str:
    from autocompress.urls import redact

    try:
        return redact(url)
    except ValueError:  # not even parseable as a URL: it cannot be shown safely
        return "<unparseable URL>"


def check_text_file(path: Path) -> None:
    """A YAML argument must be an existing, readable text file (checked before any other work)."""
    if not path.is_file():
        fail(f"{path}: file not found")
    try:
        path.read_text()
    except UnicodeDecodeError as e:
        fail(f"{path}: not a UTF-8 text file (undecodable byte at offset {e.start})")
    except OSError as e:
        fail(f"{path}: cannot read it ({e.strerror})")


def check_dir_flag(path: Optional[Path], flag: str, given: Optional[Path] = None) -> None:
    """A directory flag must name a directory, or a path that can become one: no file in the way."""
    if path is None:
        return
    p, given = path, given or path
    try:
        while not p.exists() and p.parent != p:
            p = p.parent
        ok = p.is_dir()
    except OSError as e:
        fail(f"{flag} {given}: {e.strerror}")
    if not ok:
        fail(f"{flag} {given}: {p} is a file, not a directory")


def check_output_file(path: Path, flag: str) -> None:
    if path.is_dir():
        fail(f"{flag} {path}: is a directory; give the path of the file to write")
    check_dir_flag(path.parent, flag, given=path)


def check_storage(url: Optional[str]) -> None:
    """An Optuna storage URL is a SQLAlchemy URL: parse it and load its dialect and driver
    (this connects to nothing), and a SQLite file needs an existing directory."""
    if not url:
        return
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
        u.get_dialect().import_dbapi()
    except Exception as e:  # ArgumentError, NoSuchModuleError, ImportError of the driver, ...
        fail(f"--storage {_shown(url)}: not a usable Optuna storage URL ({type(e).__name__}: {e}); "
             "e.g. postgresql://user@host/db or sqlite:////abs/path/study.db")
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:") \
            and not u.database.startswith("file:") and not Path(u.database).parent.is_dir():
        fail(f"--storage {_shown(url)}: directory {Path(u.database).parent} does not exist")


def check_tracking_uri(uri: Optional[str]) -> None:
    """A URI MLflow has no store for fails here rather than after the run dir is made."""
    if not uri:
        return
    from urllib.parse import urlsplit

    try:
        scheme, host = urlsplit(uri).scheme, urlsplit(uri).hostname
    except ValueError as e:
        fail(f"--tracking-uri {_shown(uri)}: not a URI ({e})")
    if scheme in ("http", "https") and not host:
        fail(f"--tracking-uri {_shown(uri)}: no host; e.g. http://host:5000")
    try:  # MLflow's own scheme lookup (plugins included); private, so skipped if it moves
        from mlflow.tracking._model_registry.utils import _get_store_registry
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        registries = [_tracking_store_registry, _get_store_registry()]
    except ImportError:
        registries = []
    for registry in registries:
        try:
            registry.get_store_builder(uri)
        except Exception:
            fail(f"--tracking-uri {_shown(uri)}: MLflow has no store for scheme {scheme!r}; e.g. "
                 "http://host:5000, sqlite:////abs/path/mlflow.db or a directory")


def check_finite(value: Optional[float], flag: str, minimum: Optional[float] = None) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        fail(f"{flag} {value}: must be a finite number")
    if minimum is not None and value < minimum:
        fail(f"{flag} {value}: must be >= {minimum:g}")


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
    check_text_file(trial_spec)
    check_dir_flag(cache_dir, "--cache-dir")
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

    check_text_file(trial_spec)
    check_text_file(config)
    check_dir_flag(output_dir, "--output-dir")
    check_dir_flag(cache_dir, "--cache-dir")
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
    out.print(f"artifact: {result['artifact']} (return and latency measured in the {result['runtime']} runtime)")


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

    check_text_file(file)
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
           seed: Optional[int] = typer.Option(None, "--seed", help="sampler seed [default: the space's seed]",
                                              min=0, max=2**32 - 1),
           resume: bool = typer.Option(False, "--resume", help="continue the search in --run-dir: COMPLETE "
                                       "trials are kept, trials left RUNNING are marked FAIL and asked again "
                                       "(only when no other driver is running on the study)"),
           join: bool = typer.Option(False, "--join", help="add trials to a study other drivers are running "
                                     "(same --storage, or the same --run-dir): no baselines, RUNNING trials are "
                                     "left alone, --trials counts every driver's trials"),
           cache_dir: Optional[Path] = CacheOpt):
    """Multi-objective search (Optuna) over technique combinations; trials run in parallel on Ray,
    every trial and the Pareto front are logged to MLflow.

    Locally this starts Ray on this machine; with RAY_ADDRESS set, or under `ray job submit`,
    it joins that cluster. Open the results with the command printed at the end
    (`mlflow ui --backend-store-uri ...`), then `autocompress pareto|pick|export RUN_DIR`.
    """
    from autocompress.search import SearchOptions, make_sampler, parse_faults, run_search
    from autocompress.space import load_search_space

    check_text_file(space_file)
    check_storage(storage)
    check_tracking_uri(tracking_uri)
    check_dir_flag(run_dir, "--run-dir")
    check_dir_flag(cache_dir, "--cache-dir")
    try:
        if resume and join:
            raise ConfigError("--resume and --join exclude each other: --resume takes the study over (marks "
                              "RUNNING trials FAIL), --join works beside other drivers")
        space, spec, spec_path = load_search_space(space_file)
        opts = SearchOptions(run_dir=run_dir or Path("runs") / space.name, trials=trials or space.budget.trials,
                             parallel=parallel or space.budget.parallel,
                             sampler=space.sampler if sampler is None else sampler,  # "" is no sampler
                             seed=space.seed if seed is None else seed, storage=storage, tracking_uri=tracking_uri,
                             resume=resume, join=join, cache_dir=cache_dir,
                             faults=parse_faults(os.environ.get("AUTOCOMPRESS_FAULT_TRIALS", "")))
        try:
            make_sampler(opts.sampler, opts.seed)
        except ConfigError:
            raise
        except ValueError as e:  # e.g. numpy's seed range, for a seed from the space file
            raise ConfigError(f"{'--seed' if seed is not None else f'{space_file}: seed'}: {e}") from None
        if resume and not storage and not (opts.run_dir / "study.journal").exists():  # search.storage_for's file
            raise ConfigError(f"--resume: {opts.run_dir} holds no search to continue (no study.journal; pass "
                              "--storage if the search used one)")
        from autocompress import rl

        rl.check_training_keys(spec)
        summary = _with_progress(lambda progress: run_search(space, spec, space_file, spec_path, opts,
                                                             progress=progress, log=err.print))
    except (ConfigError, ValueError) as e:
        fail(str(e))
    if summary["tracking_offline"]:
        err.print(f"[yellow]MLflow went offline mid-search[/] ({summary['tracking_offline']}): every result is in the "
                  f"study; `autocompress sync {opts.run_dir}` logs what MLflow missed", highlight=False)
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

    check_storage(storage)
    try:
        study, state = load_run(run_dir, storage)
    except ConfigError as e:
        fail(str(e))
    front = [pareto_row(r) for r in current_front(study, state["objectives"])]
    if as_json:
        sys.stdout.write(json.dumps(front) + "\n")
    else:
        out.print(front_table(front, f"Pareto front of {run_dir} ({', '.join(state['objectives'])})"))


class Minimize(str, Enum):
    latency = "latency"
    bytes = "bytes"


@app.command()
def pick(run_dir: Path = RunDirArg,
         min_return_ratio: float = typer.Option(0.95, help="keep trials with return >= this × teacher's"),
         minimize: Minimize = typer.Option(Minimize.latency, help="latency | bytes"),
         max_bytes: Optional[float] = typer.Option(None, help="artifact size limit", min=0),
         max_latency_ms: Optional[float] = typer.Option(None, help="batch-1 latency limit, ms", min=0),
         as_json: bool = typer.Option(False, "--json"), storage: Optional[str] = StorageOpt):
    """Pick the best trial under constraints; prints its config as YAML for `compress --config`."""
    import yaml

    from autocompress import pareto
    from autocompress.search import load_run, pareto_row, rows

    check_finite(min_return_ratio, "--min-return-ratio")
    check_finite(max_bytes, "--max-bytes", 0)
    check_finite(max_latency_ms, "--max-latency-ms", 0)
    check_storage(storage)
    try:
        study, _ = load_run(run_dir, storage)
        best = pareto.pick(rows(study), min_return_ratio=min_return_ratio, minimize=minimize.value,
                           max_bytes=max_bytes, max_latency_ms=max_latency_ms)
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


@app.command()
def sync(run_dir: Path = RunDirArg, storage: Optional[str] = StorageOpt,
         tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                                    help="MLflow tracking URI [default: the one the search used]")):
    """Log to MLflow what it missed (e.g. the tracking server was down mid-search): every finished
    trial of the study gets its child run, then the pareto tags and the front's files. Idempotent:
    a second sync logs nothing new."""
    from autocompress.search import sync_run

    check_storage(storage)
    check_tracking_uri(tracking_uri)
    try:
        report = sync_run(run_dir, storage, tracking_uri, log=err.print)
    except ConfigError as e:
        fail(str(e))
    out.print(f"synced {report['logged']} trial(s) to MLflow, {report['present']} already there; front of "
              f"{report['front']}; parent run {report['parent_run_id']}")


@app.command("export")
def export_cmd(run_dir: Path = RunDirArg, trial: int = typer.Option(..., "--trial", help="trial number", min=0),
               output: Path = typer.Option(..., "--output", "-o", help="where to write the .acz artifact"),
               storage: Optional[str] = StorageOpt):
    """Write the deployable artifact (.acz) of a trial; load it with autocompress.runtime.NumpyPolicy."""
    import shutil

    from autocompress.search import load_run, rows

    check_output_file(output, "--output")
    check_storage(storage)
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
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, output)
    except OSError as e:
        fail(f"--output {output}: {e.strerror}")
    out.print(f"wrote {output} ({output.stat().st_size:,} bytes) from trial {trial}")


if __name__ == "__main__":
    app()
