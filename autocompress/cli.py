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
out = Console()


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
        else:
            load_compress_config(file)
            kind = "techniques config"
    except ConfigError as e:
        fail(str(e))
    out.print(f"{file}: valid {kind}")


if __name__ == "__main__":
    app()
