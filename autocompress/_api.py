"""The public API's verbs, re-exported by `autocompress/__init__.py` with `Policy` (policy.py) and
`Run` (_search/run.py). The CLI and the benchmarks call only the public API. Examples run as doctests
in the suite (tests/test_api.py); `RUN_DIR` there is a run dir of a tiny finished search and `tmp` a
fresh temporary directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from autocompress import artifact, checks, measure, pipeline, rl, sources, targets
from autocompress import layer_sensitivity as sens
from autocompress import teacher as teachers
from autocompress.algos import ALGOS
from autocompress.config import CompressConfig, TrialSpec, load_compress_config, load_trial_spec, parse, read_yaml
from autocompress.conv import geometry_chain, out_hw
from autocompress.errors import AutocompressError, ConfigError, TrialError
from autocompress.policy import Policy
from autocompress.results import TrialResult
from autocompress.space import SearchSpace, load_search_space
from autocompress.teacher import default_cache
from autocompress.techniques import Context
from autocompress.urls import redact

if TYPE_CHECKING:
    from autocompress._search.run import Run

Log = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


def _spec(spec: TrialSpec | str | Path, check_import: bool = True) -> TrialSpec:
    """A TrialSpec, or one loaded from a path; its `training:` keys checked against RLlib and its
    imported teacher (`teacher.from`) read and checked against the env, before any work."""
    source = None
    if not isinstance(spec, TrialSpec):
        checks.text_file(Path(spec))
        source, spec = spec, load_trial_spec(spec)
    _check_rllib_keys(spec, source)
    if check_import:
        _check_import(spec)
    return spec


def _check_import(spec: TrialSpec, recurrent: bool = False):
    """The imported teacher, if the spec names one (ConfigError naming what does not fit). `recurrent`: the
    caller runs trials (compress, search), which take a recurrent teacher where the spec lets them
    (pipeline.check_recurrent_trial); the others refuse one (sources.load's gate)."""
    if not spec.teacher.from_:
        if recurrent:  # a recurrent teacher trained here (teacher.rnn)
            pipeline.check_recurrent_trial(spec)
        return None
    imported = sources.load(spec, recurrent=recurrent)
    if recurrent:
        pipeline.check_recurrent_trial(spec, imported.actor)
    return imported


def _check_teacher(spec: TrialSpec, cache_root: Path, imported, train: bool = False) -> bool:
    """TeacherError, before any Ray work, when the teacher does not clearly beat a useless policy on the
    evaluation episodes (measure.check_teacher_margin). The teacher checked is the imported policy, or
    the cached or committed one (read where it lies: nothing is created); where there is none yet,
    `train` trains it now (compress and sensitivity would anyway), else False: not checked (a search
    checks it when its teacher task returns). `imported`: the spec's imported teacher as _check_import
    returned it (None: not imported), so that a file is read once."""
    if imported is not None:
        net, head = imported.actor, imported.head
    else:
        teacher = teachers.available_teacher(spec, cache_root) or (teach(spec, cache_dir=cache_root) if train else None)
        if teacher is None:
            return False
        net, head = teacher.actor, teacher.info["head"]
    measure.check_teacher_margin(spec, artifact.runtime_act(net, head), spec.env_creator())
    return True


def _config(config: CompressConfig | dict | str | Path | None) -> CompressConfig:
    if isinstance(config, CompressConfig):
        return config
    if config is None or isinstance(config, dict):
        return parse(CompressConfig, dict(config or {}), "config")
    checks.text_file(Path(config))
    return load_compress_config(config)


def _check_rllib_keys(spec: TrialSpec, source: str | Path | None = None) -> None:
    """`training:` keys RLlib does not know fail here, before any work (builds a config only)."""
    try:
        rl.check_training_keys(spec)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None


# -- one policy ---------------------------------------------------------------------------------

def teach(spec: TrialSpec | str | Path, *, cache_dir: str | Path | None = None, retrain: bool = False,
          train: bool = True, log: Log = _quiet):
    """Train the trial spec's teacher with RLlib (or load it from the cache or the teachers committed
    with the repo) and return it: `.actor` (the deployed net), `.info`, `.path`, `.artifact()`.
    `train=False` raises TeacherError rather than train one.

    >>> import autocompress as ac
    >>> teacher = ac.teach("trials/cartpole_ppo.yaml", cache_dir=tmp)   # committed: loads, no training
    >>> teacher.actor.hidden_widths(), teacher.info["head"]["kind"]
    ([256, 256], 'discrete')
    """
    spec = _spec(spec)
    checks.directory(cache_dir, "cache_dir")
    return teachers.train_teacher(spec, Path(cache_dir) if cache_dir else default_cache(), log=log, retrain=retrain,
                                  train=train)


def compress(spec: TrialSpec | str | Path, config: CompressConfig | dict | str | Path | None = None, *,
             output_dir: str | Path | None = None, cache_dir: str | Path | None = None,
             target: str | None = None, log: Log = _quiet) -> TrialResult:
    """Run one full trial: teacher (cached) -> techniques -> RLlib fine-tune -> export -> measure.

    `config` is a techniques config (a dict, a YAML path or a CompressConfig); `{}` measures the
    teacher as-is. `target`: where it runs (autocompress.targets; default: the spec's latency.target).
    Writes `output_dir/policy.acz` and `output_dir/result.json`. A recurrent (LSTM / GRU) teacher needs a
    host target, and PPO to fine-tune (pipeline.check_recurrent_trial).

    >>> import autocompress as ac
    >>> spec = ac.load_trial_spec("trials/cartpole_ppo.yaml").updated(
    ...     {"finetune": {"iterations": 0}, "eval": {"episodes": 3}, "latency": {"calls": 200}})
    >>> r = ac.compress(spec, {"quantize": {"bits": 8}}, output_dir=tmp)
    >>> r.bytes < r.teacher_bytes / 3, r.return_ratio > 0.9
    (True, True)
    """
    spec, cfg = _spec(spec, check_import=False), _config(config)
    if target is not None:
        spec = spec.updated({"latency": {"target": target}})
    imported = _check_import(spec, recurrent=True)  # after the target: a recurrent teacher is checked against it
    _check_target(spec)
    cfg.check_against(spec, config if isinstance(config, (str, Path)) else None)
    checks.directory(output_dir, "output_dir")
    checks.directory(cache_dir, "cache_dir")
    if output_dir is None:
        name = Path(config).stem if isinstance(config, (str, Path)) else \
            hashlib.sha256(cfg.model_dump_json(exclude_none=True).encode()).hexdigest()[:8]
        output_dir = Path("runs") / "compress" / f"{spec.name}-{name}"
    cache_root = Path(cache_dir) if cache_dir else default_cache()
    _check_teacher(spec, cache_root, imported, train=True)
    try:
        result = pipeline.compress_trial(spec, cfg, output_dir, cache_root, log=log)
    except AutocompressError:
        raise
    except Exception as e:  # diverged, or raised inside RLlib: one message; the cause stays chained
        raise TrialError(f"trial failed: {type(e).__name__}: {e}") from e
    out = result.to_dict()
    out["config"] = json.loads(cfg.model_dump_json(exclude_none=True))
    (Path(output_dir) / "result.json").write_text(json.dumps(out, indent=1))
    return result


def evaluate(policy: Policy, spec: TrialSpec | str | Path, *, episodes: int | None = None,
             seed: int | None = None) -> np.ndarray:
    """Undiscounted return of each of `episodes` episodes (default: the spec's eval.episodes), episode i
    reset with seed + i (default: the spec's eval.seed), deterministic actions.

    >>> import autocompress as ac
    >>> returns = ac.evaluate(ac.Policy.load(f"{RUN_DIR}/trials/0/policy.acz"), "trials/cartpole_ppo.yaml", episodes=2)
    >>> returns.shape
    (2,)
    """
    spec = _spec(spec, check_import=False)
    if spec.teacher.from_:  # checked against the env; a recurrent one too: evaluation resets the policy per episode
        sources.load(spec, recurrent=True)
    return measure.evaluate(policy.act, spec.env_creator(),
                            spec.eval.episodes if episodes is None else episodes,
                            spec.eval.seed if seed is None else seed)


def compress_net(net, config: CompressConfig | dict) -> Any:
    """Apply a techniques config to a copy of a PolicyNet, without RL (no fine-tuning, no env): the
    data-free techniques (quantize, prune, share, lowrank, structured by l1 or random). `distill`
    and structured `importance` need the teacher's states: use `compress`.

    >>> import autocompress as ac
    >>> net = ac.PolicyNet.mlp(4, [64, 64], 2)
    >>> small = ac.compress_net(net, {"prune": {"sparsity": 0.9}, "quantize": {"bits": 4}})
    >>> head = {"kind": "discrete", "n": 2}
    >>> round(small.sparsity(), 2), len(ac.Policy.from_net(net, head).data) / len(ac.Policy.from_net(small, head).data) > 7
    (0.9, True)
    """
    try:
        return pipeline.compress_net(net, _config(config), Context(), None)
    except ValueError as e:  # e.g. distill without observations
        raise ConfigError(str(e)) from None


def sensitivity(spec: TrialSpec | str | Path, *, techniques: list[str] | None = None,
                settings: dict[str, list] | list[str] | None = None, episodes: int = 5, output_dir: str | Path | None = None,
                cache_dir: str | Path | None = None, tracking_uri: str | None = None, log: Log = _quiet,
                progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Layer sensitivity of the spec's teacher: for each layer and each setting of each per-layer technique
    (quantize bits, prune sparsity, share bits, structured amount), that layer alone compressed, no
    fine-tune: action agreement and KL with the teacher on its visited states, and return on `episodes`
    seeded episodes (seeds from 300000). Writes `output_dir/sensitivity.json` and the heatmap
    `sensitivity.png` [default dir: runs/sensitivity/<spec name>], logs both to an MLflow run named
    `sensitivity` in the experiment named after the spec (store: `tracking_uri`, default sqlite in the
    output dir). `settings` overrides the swept values per technique ({technique: values}, or the CLI's
    items "quantize=2,4,8"); returns the table (see autocompress/layer_sensitivity.py for every field)
    and `files`, the two files written.

    >>> import autocompress as ac
    >>> t = ac.sensitivity("trials/cartpole_ppo.yaml", settings={"prune": [0.5, 0.99]}, episodes=0,
    ...                    output_dir=tmp, cache_dir=tmp)
    >>> [(r["layer"], r["setting"]) for r in t["rows"]]
    [(0, 0.5), (0, 0.99), (1, 0.5), (1, 0.99), (2, 0.5), (2, 0.99)]
    >>> all(r["agreement"] <= 1 for r in t["rows"]), sorted(p.name for p in Path(tmp).glob("sensitivity.*"))
    (True, ['sensitivity.json', 'sensitivity.png'])
    """
    from autocompress import tracking  # deferred (heavy): MLflow

    if isinstance(settings, (list, tuple)):  # TECHNIQUE=V1,V2 items: malformed ones named before anything else
        settings = sens.parse_settings(settings) or None
    spec = _spec(spec, check_import=False)
    imported = sources.load(spec, recurrent=True) if spec.teacher.from_ else None  # its measures carry the state
    names = sens.check_techniques(techniques if techniques is not None else (list(settings) if settings else None))
    extra = sorted(set(settings or {}) - set(names))
    if extra:
        raise ConfigError(f"settings for {extra[0]!r}, which --techniques leaves out", option="settings")
    grid = sens.check_settings({t: (settings or {}).get(t, sens.DEFAULT_SETTINGS[t]) for t in names})
    if not isinstance(episodes, int) or episodes < 0:
        raise ConfigError(f"{episodes!r}: must be an integer >= 0", option="episodes")
    checks.directory(output_dir, "output_dir")
    checks.directory(cache_dir, "cache_dir")
    checks.tracking_uri(tracking_uri)
    if tracking_uri:
        tracking.check_reachable(tracking_uri)
    out = Path(output_dir) if output_dir else Path("runs") / "sensitivity" / spec.name
    cache_root = Path(cache_dir) if cache_dir else default_cache()
    _check_teacher(spec, cache_root, imported, train=True)
    table = sens.run(spec, cache_root, settings=grid, episodes=episodes,
                     out_dir=out, log=log, progress=progress or (lambda done, total, what: None))
    uri = tracking_uri or tracking.default_uri(out)
    files = [out / sens.FILE, out / sens.PLOT]
    rid = tracking.log_sensitivity(
        uri, spec.name, {"trial_spec": spec.name, "techniques": ",".join(names), "settings": json.dumps(grid),
                         "episodes": episodes, "seed": table["seed"], "states": table["states"]},
        {"sensitivity_seconds": table["seconds"], "measurements": len(table["rows"]),
         **({"teacher_return_mean": table["teacher"]["return_mean"]} if episodes else {})},
        files, artifact_dir=out / "mlartifacts")
    table["mlflow"] = {"tracking_uri": redact(uri), "experiment": spec.name, "run_id": rid}
    sens.write(table, out)
    table["files"] = [str(f) for f in files]  # the table as written, plus where
    return table


# -- a search and its results -----------------------------------------------------------------

def _check_target(spec: TrialSpec) -> None:
    """Before Ray starts: an MCU target needs the cross toolchain (ConfigError naming the Debian packages),
    and a conv teacher's activations must fit the target's RAM (two fp32 buffers of its widest layer)."""
    t = targets.target(spec.latency.target)
    if not t.mcu:
        return
    from autocompress.mcu.build import toolchain  # deferred: pyelftools, for MCU targets only

    toolchain()
    if spec.teacher.conv_filters:
        env = spec.env_creator()()
        try:
            shape = tuple(env.observation_space.shape)
        finally:
            env.close()
        chain = geometry_chain(shape, spec.teacher.obs_layout, spec.teacher.conv_filters)
        widest = max([int(np.prod(shape))] + [f[0] * int(np.prod(out_hw(g)))
                                              for f, g in zip(spec.teacher.conv_filters, chain)])
        need = 2 * 4 * widest
        if need > t.ram_bytes:
            raise ConfigError(f"teacher.conv_filters: the conv net's activations need {need:,} bytes of RAM (two fp32 "
                              f"buffers of its widest layer, {widest:,} values), more than {t.name}'s {t.ram_bytes:,} "
                              f"({t.description}): choose a target with more RAM, or fewer channels", option="target")


def search(space: SearchSpace | str | Path, *, trials: int | None = None, parallel: int | None = None,
           run_dir: str | Path | None = None, storage: str | None = None, tracking_uri: str | None = None,
           sampler: str | None = None, seed: int | None = None, resume: bool = False, join: bool = False,
           cache_dir: str | Path | None = None, warm_start: str | Path | None = None,
           target: str | None = None, progress: Callable[[dict], None] | None = None, log: Log = _quiet) -> Run:
    """Multi-objective Optuna search over technique combinations; trials run in parallel as Ray tasks,
    every trial and the Pareto front go to MLflow. Options left None take the space file's values
    (budget, sampler, seed, target); the run dir defaults to runs/<space name>. `warm_start`: an earlier run
    dir of the same env and algorithm to start from (see autocompress/_search/warm.py). Everything is checked before
    anything is created or started; a trial that fails is recorded FAIL and the search goes on.

    >>> import autocompress as ac, yaml
    >>> space = yaml.safe_load(open("search_spaces/cartpole_ppo.yaml"))
    >>> spec = yaml.safe_load(open("trials/cartpole_ppo.yaml"))
    >>> spec.update(finetune={"iterations": 0}, eval={"episodes": 3}, latency={"calls": 200})
    >>> _ = open(f"{tmp}/trial.yaml", "w").write(yaml.safe_dump(spec))
    >>> space.update(trial_spec="trial.yaml", techniques={"quantize": {"bits": {"low": 4, "high": 8}}})
    >>> _ = open(f"{tmp}/space.yaml", "w").write(yaml.safe_dump(space))
    >>> run = ac.search(f"{tmp}/space.yaml", trials=3, run_dir=f"{tmp}/run")
    >>> run.summary["complete"], len(run.front()) >= 1
    (3, True)
    """
    from autocompress._search import SearchOptions, run_search  # deferred (heavy): Optuna, MLflow, Ray
    from autocompress._search.run import Run
    from autocompress._search.tasks import faults_from_env

    space_path = Path(space) if not isinstance(space, SearchSpace) else None
    if space_path is None:
        raise ConfigError("give the search space as a YAML path (its trial spec is found relative to it)",
                          option="space")
    checks.text_file(space_path)
    space_obj, spec, spec_path = load_search_space(space_path, target)
    imported = _check_import(spec, recurrent=True)  # a recurrent teacher's trials: before the toolchain is looked for
    _check_target(spec)
    opts = SearchOptions(run_dir=Path(run_dir) if run_dir else Path("runs") / space_obj.name,
                         trials=trials or space_obj.budget.trials, parallel=parallel or space_obj.budget.parallel,
                         sampler=space_obj.sampler if sampler is None else sampler,
                         seed=space_obj.seed if seed is None else seed, storage=storage, tracking_uri=tracking_uri,
                         resume=resume, join=join, cache_dir=Path(cache_dir) if cache_dir else None,
                         warm_start=Path(warm_start) if warm_start else None, faults=faults_from_env())
    try:
        opts.check()
    except ConfigError as e:
        if e.option == "seed" and seed is None:  # the seed came from the space file: name the file
            raise ConfigError(f"{space_path}: seed: {e.args[0]}") from None
        raise
    _check_rllib_keys(spec, spec_path)
    if not (resume or join):  # a study that already ran trials had its teacher checked then
        cache_root = opts.cache_dir or opts.run_dir / "teachers"
        opts.check_teacher = not _check_teacher(spec, cache_root, imported)  # not there yet: checked once trained
    summary = run_search(space_obj, spec, space_path, spec_path, opts, progress=progress or (lambda s: None), log=log)
    run = Run.load(opts.run_dir, storage)
    run.summary = summary
    return run


def export(run_dir: str | Path, trial: int, output: str | Path, *, format: str = "acz", smallest: bool = False,
           storage: str | None = None, target: str | None = None) -> Path:
    """Write a search's trial in the form you ship; `Run.load(run_dir).export(...)`. Formats:

    - 'acz': the artifact file (`Policy.load`);
    - 'c': a directory with policy.c, policy.h and an example main.c (C99, no malloc, libm only);
      each layer's weights in the form its kernel reads, so it runs at the measured speed;
      `smallest=True`: every layer in its smallest stored form instead (least flash, slower);
    - 'onnx': an ONNX graph (fp32; the trial's int8 layers, if any, in integer arithmetic);
    - 'onnx-int8': int8 weights and integer MatMul wherever the codes fit int8;
    - 'tflite': a TFLite flatbuffer (LiteRT, TFLite Micro) of the fp32 net (MLP and conv);
    - 'tflite-int8': full-integer int8 TFLite where every layer is int8-representable, with the artifact's
      calibrated activation scales, else scales from the states the teacher visits in the trial's spec;
    - 'pte': an ExecuTorch program, XNNPACK-delegated (fp32; MLP and conv);
    - 'pte-int8': the same through ExecuTorch's XNNPACK quantizer (per-channel int8 weights, dynamic int8
      activations) where every layer is int8-representable.

    `target` (default: the one the trial was measured on): for an MCU target, 'c' also writes a Makefile
    with the core's flags; the kernels are those the trial chose by that core's cycles.

    'acz', 'c' and 'onnx' act as the artifact did when the trial was measured (the same per-layer
    kernels); 'onnx-int8' as `Policy.load(path, kernels=exports.int8_kernels(data))`; 'tflite' as the
    fp32 net; 'tflite-int8' as the integer-only net (kernels 'iq', MLPs) up to TFLite's requantization rounding;
    'pte' as the fp32 net; 'pte-int8' as the int8 kernels up to how each layer's input is rounded.

    >>> import autocompress as ac
    >>> path = ac.export(RUN_DIR, 0, f"{tmp}/teacher.acz")
    >>> ac.Policy.load(path).act(np.zeros(4, np.float32)) in (0, 1)
    True
    >>> sorted(p.name for p in ac.export(RUN_DIR, 0, f"{tmp}/c", format="c").iterdir())
    ['Makefile', 'main.c', 'policy.c', 'policy.h']
    """
    from autocompress._search.run import Run  # deferred (heavy): Optuna, MLflow

    checks.export_format(format)  # before the run dir is read: a bad format or output alone is named
    if format != "c":
        checks.output_file(Path(output), "output")
    return Run.load(run_dir, storage).export(trial, output, format, smallest, target)


def sync(run_dir: str | Path, *, storage: str | None = None, tracking_uri: str | None = None,
         log: Log = _quiet) -> dict:
    """Give every finished trial its MLflow child run (those missing only), re-tag the front, re-log
    the front's files. Idempotent. Raises TrackingError when MLflow fails.

    >>> import autocompress as ac
    >>> ac.sync(RUN_DIR)["logged"]   # the search logged everything already
    0
    """
    from autocompress._search import sync_run  # deferred (heavy): Optuna, MLflow

    return sync_run(Path(run_dir), storage, tracking_uri, log=log)


def inspect_import(spec: TrialSpec | str | Path, *, episodes: int = 10, seed: int | None = None) -> dict:
    """Check an imported teacher (`teacher.from`) before a search: the format found, algorithm, layers,
    parameters, artifact bytes, and its return on `episodes` seeded episodes in autocompress's runtime
    next to the source framework's own inference on the same seeds (seed default: the spec's
    eval.seed), plus the share of the source's actions the artifact reproduces on the states visited.
    """
    spec = _spec(spec, check_import=False)
    imported = _check_import(spec)
    if imported is None:
        raise ConfigError("the trial spec imports no teacher (teacher.from)")
    data = artifact.to_bytes(imported.actor, imported.head)
    policy = Policy.from_bytes(data)
    make_env = spec.env_creator()
    seed = spec.eval.seed if seed is None else seed
    ours = measure.evaluate(policy.act, make_env, episodes, seed)
    theirs = measure.evaluate(imported.source_act, make_env, episodes, seed)
    states = measure.collect_obs(imported.source_act, make_env, 500, seed)
    same = [np.allclose(policy.act(o), imported.source_act(o), atol=1e-5) for o in states]
    return {"format": imported.format, "algorithm": imported.source_algorithm, "fine_tuned_as": imported.algorithm,
            "layers": imported.describe(), "n_params": imported.actor.num_params(), "artifact_bytes": len(data),
            "critic": "from the file" if imported.critic is not None else (
                f"none: {ALGOS[imported.algorithm].critic_note}" if ALGOS[imported.algorithm].q_values else
                f"none in the file: warmed up {spec.teacher.critic_warmup} iterations before fine-tuning"),
            "obs_norm": imported.head.get("obs_norm") is not None, "runtime": policy.runtime,
            "episodes": episodes, "seed": seed, "return": float(ours.mean()), "return_std": float(ours.std()),
            "source_return": float(theirs.mean()), "source_return_std": float(theirs.std()),
            "action_agreement": float(np.mean(same)), "notes": imported.notes}


def validate(path: str | Path, teacher: bool = True) -> str:
    """Check a YAML file: a trial spec, a search space or a techniques config. Returns which it is;
    raises ConfigError naming the wrong key. `teacher`: a spec's teacher, where it is imported, cached or
    committed, must also clearly beat a useless policy on the evaluation episodes (TeacherError).

    >>> import autocompress as ac
    >>> ac.validate("search_spaces/cartpole_ppo.yaml"), ac.validate("configs/combo.yaml")
    ('search space', 'techniques config')
    """
    path = Path(path)
    checks.text_file(path)
    data = read_yaml(path)
    if "env" in data:
        spec = _spec(path, check_import=False)
        imported = _check_import(spec)
        if teacher:
            _check_teacher(spec, default_cache(), imported)
        return "trial spec"
    if "techniques" in data:
        _, spec, spec_path = load_search_space(path)
        _check_rllib_keys(spec, spec_path)
        if teacher:
            _check_teacher(spec, default_cache(), _check_import(spec))
        return "search space"
    load_compress_config(path)
    return "techniques config"
