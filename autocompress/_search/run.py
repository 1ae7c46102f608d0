"""`Run`: a search's run dir over its Optuna study (the source of truth): front, pick, held-out
re-evaluation, export, registration. Public as `autocompress.Run` (loaded on first use: it imports
Optuna and MLflow)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from mlflow import MlflowClient

from autocompress import checks, exports, measure, pareto, tracking
from autocompress.config import TrialSpec
from autocompress.errors import ConfigError
from autocompress.exports.c import BUILD
from autocompress.exports.measure import report as export_report, words as export_words
from autocompress.layers import runs_iq
from autocompress.results import FrontRow
from autocompress.runtime import NumpyPolicy
from autocompress.space import load_search_space
from autocompress.targets import target as find_target
from autocompress.urls import is_redacted, mlflow_ui_base, mlflow_ui_links
from autocompress._search import heldout
from autocompress._search.record import StudyAttrs, TrialRecord
from autocompress._search.results import current_front, heldout_of_front, load_run, reference_row, rows
from autocompress._search.study import JOURNAL
from autocompress._search.sync import sync_run

Log = Callable[[str], None]

#: teacher-visited states `export_figures` times a format on
EXPORT_OBS = 200


def _quiet(msg: str) -> None:
    pass


@dataclass
class Run:
    """A search's run dir: its Optuna study (the source of truth), front, pick and export.

    >>> import autocompress as ac
    >>> run = ac.Run.load(RUN_DIR)
    >>> run.objectives
    ['return', 'latency', 'bytes']
    >>> best = run.pick(min_return_ratio=0.0, minimize="bytes")
    >>> best.bytes == min(r.bytes for r in run.front())
    True
    >>> run.export(best.trial, f"{tmp}/best.acz").stat().st_size == best.bytes
    True
    """

    run_dir: Path
    study: Any
    state: dict
    summary: dict = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | Path, storage: str | None = None) -> "Run":
        """Open the run dir of a finished (or running) search; `storage` if it used a storage URL."""
        checks.storage_url(storage)
        study, state = load_run(Path(run_dir), storage)
        return cls(Path(run_dir), study, state)

    @property
    def objectives(self) -> list[str]:
        return list(self.state["objectives"])

    def rows(self) -> list[dict]:
        """Every COMPLETE trial as a dict: TrialResult fields + trial, config, feasible."""
        return rows(self.study)

    def front(self) -> list[FrontRow]:
        """The Pareto front (over feasible trials when any is feasible), with ratios to the teacher."""
        return [FrontRow.from_row(r) for r in current_front(self.study, self.objectives)]

    def hypervolume(self, before: int | None = None) -> float:
        """Normalised hypervolume of the feasible COMPLETE trials (numbered below `before`, if given):
        reference = (0 return, teacher latency, teacher bytes) in ratios, so 1.0 would be the teacher's
        return at no latency and no bytes. Latency ratios depend on the runtime: compare within one."""
        rs = [r for r in self.rows() if r["feasible"] and (before is None or r["trial"] < before)]
        return pareto.normalised_hypervolume(rs, self.objectives)

    def heldout(self) -> dict | None:
        """The front's held-out snapshot (`pareto --reevaluate`, the end of a search): episodes, seed,
        runtime, the teacher's and the reference's values and each re-evaluated trial's; None when there
        is none or the front has members it lacks (then `front`/`pick` go by the evaluation episodes)."""
        return heldout_of_front(self.study, current_front(self.study, self.objectives))

    def reference(self) -> FrontRow | None:
        """The teacher fine-tuned with the trials' fine-tune budget and no technique
        (`finetune.teacher_reference: true`), as a row (trial -1); None when the search has none."""
        row = reference_row(self.study)
        return FrontRow.from_row(row) if row else None

    def evaluate_heldout(self, episodes: int | None = None, *, parallel: bool = False,
                         tracking_uri: str | None = None, log: Log = _quiet,
                         min_return_ratio: float | None = None) -> dict:
        """Re-evaluate the front, the teacher (and the reference) on `episodes` held-out episodes (default:
        the spec's eval.heldout_episodes; seeds from eval.heldout_seed), in the runtime the study pinned (where no
        front member keeps `min_return_ratio` there, default the space's, the trials it dominated too:
        heldout.reevaluate); store the values in the study and as MLflow metrics `heldout_*`, re-write the
        front's files. `parallel`: one Ray task per policy. Returns the snapshot (`Run.heldout()`)."""
        if episodes is not None and (isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1):
            raise ConfigError(f"{episodes!r}: held-out episodes must be a whole number >= 1", option="reevaluate")
        checks.tracking_uri(tracking_uri)
        space, spec, _ = load_search_space(self.state["space"])
        return heldout.reevaluate_run(self.run_dir, self.study, self.state, spec, episodes, tracking_uri, parallel, log,
                                      space.constraints.min_return_ratio if min_return_ratio is None
                                      else min_return_ratio)

    def pick(self, min_return_ratio: float = 0.95, minimize: Literal["latency", "bytes"] = "latency",
             max_bytes: float | None = None, max_latency_ms: float | None = None, max_flash: int | None = None,
             max_ram: int | None = None, log: Log = _quiet) -> FrontRow:
        """The trial with the lowest `minimize` among those meeting every constraint (ConfigError
        saying how many trials met each constraint when none meets them all). With held-out values
        (`heldout()`), the return constraint and ties go by them, among the re-evaluated trials; else by
        the evaluation episodes (the row's `chosen_on` says which); where no re-evaluated trial keeps
        `min_return_ratio`, the trials the front dominated are re-evaluated first (`evaluate_heldout` at it:
        the snapshot may have been taken at the space's lower constraint). The figures chosen on are optimistic
        for the trial chosen, so it (and the teacher) then act on the spec's fresh episodes
        (eval.fresh_seed / eval.fresh_episodes), which nothing chose on: the row's `fresh_*` fields (kept in
        the study: a second pick of the same trial runs no episodes; None where eval.fresh_episodes is 0)."""
        checks.finite(min_return_ratio, "min_return_ratio")
        checks.finite(max_bytes, "max_bytes", 0)
        checks.finite(max_latency_ms, "max_latency_ms", 0)
        checks.finite(max_flash, "max_flash", 0)
        checks.finite(max_ram, "max_ram", 0)
        if minimize not in ("latency", "bytes"):
            raise ConfigError(f"{minimize!r}: choose latency or bytes", option="minimize")
        held = self.heldout()
        if held is not None and heldout.layers_left(self.study, self.objectives, min_return_ratio):
            log(f"pick: no re-evaluated trial keeps return ratio {min_return_ratio} on the held-out episodes: "
                "re-evaluating the trials the front dominated")
            self.evaluate_heldout(held["episodes"], log=log, min_return_ratio=min_return_ratio)
        rows, keys = self.rows(), {}
        if held is not None:  # re-evaluating above adds trials to the snapshot, as rows() shows
            rows = [r for r in rows if r.get("heldout_return_ratio") is not None]
            keys = {"ratio": "heldout_return_ratio", "mean": "heldout_return_mean"}
        try:
            best = pareto.pick(rows, min_return_ratio=min_return_ratio, minimize=minimize,
                               max_bytes=max_bytes, max_latency_ms=max_latency_ms, max_flash=max_flash,
                               max_ram=max_ram, **keys)
        except pareto.NothingQualifies as e:
            why = f"\n  (return on held-out episodes: only the {len(rows)} re-evaluated trials count)" if keys else ""
            raise ConfigError(str(e) + why) from None
        spec = self.trial_spec()
        chosen = FrontRow.from_row(best)
        fresh = heldout.fresh_values(self.study, spec, self.run_dir, best, log) or {}
        return dataclasses.replace(
            chosen, chosen_on="held-out" if keys else "evaluation",
            chosen_episodes=chosen.heldout_episodes if keys else spec.eval.episodes,
            **{f"fresh_{k}": fresh.get(k) for k in ("return_mean", "return_std", "return_ratio",
                                                     "teacher_return_mean", "episodes")})

    def export(self, trial: int, output: str | Path, format: str = "acz", smallest: bool = False,
               target: str | None = None) -> Path:
        """Write COMPLETE trial `trial`'s policy to `output` as `format` (see `autocompress.export`).
        Returns the file (or, for 'c', the directory) written."""
        checks.export_format(format)
        output = Path(output)
        if format == "c":
            checks.directory(output, "output")
        else:
            checks.output_file(output, "output")
        row = self.trial_row(trial)
        src = Path(row["artifact"])
        if not src.exists():
            raise ConfigError(f"artifact of trial {trial} is missing at {src}", option="trial")
        measured = row.get("target") or "host"
        if target is not None and find_target(target).name != measured:
            raise ConfigError(f"trial {trial} was measured on {measured}, not {target}: export it for the target it "
                              f"was measured on (a search with `target: {target}` measures there)", option="target")
        if runs_iq(row.get("kernels")) and format not in ("c", "acz", "tflite-int8"):
            raise ConfigError(f"trial {trial} runs integer-only int8 ({row['kernels'][0]!r} kernels): export it as "
                              "c, acz or tflite-int8", option="format")
        target = measured if format == "c" else "host"
        data, obs = src.read_bytes(), None
        if format == "tflite-int8":
            from autocompress.exports.tflite import needs_calibration  # deferred: LiteRT, the [tflite] extra

            if needs_calibration(data):  # its representative dataset: the states the teacher visits in the spec
                obs = self.teacher_obs()
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            exports.write(data, format, output, row.get("kernels") or None, smallest, target, obs)
        except OSError as e:
            raise ConfigError(f"{output}: {e.strerror}", option="output") from None
        except ValueError as e:  # a net the format cannot hold (e.g. int8 of layers that are not int8)
            raise ConfigError(f"trial {trial}: {e}", option="format") from None
        return output

    def export_figures(self, trial: int, path: str | Path, format: str) -> list[str]:
        """What `export` wrote to `path` for trial `trial`, measured, as lines to print. 'c': flash, RAM and
        cycles per act on the MCU target the trial was measured on; a host trial: the object's sections
        compiled here and the build command. Other formats: the file's bytes and its batch-1 latency in its
        own runtime beside the .acz C runtime's, over EXPORT_OBS teacher-visited states. Raises what
        measuring raises (e.g. a format's runtime not installed)."""
        path, row = Path(path), self.trial_row(trial)
        if format == "c" and row.get("cycles") is not None:
            return [f"wrote {path}/policy.c, policy.h, main.c, Makefile from trial {trial}, measured on "
                    f"{row['target']} ({row['cpu']}): flash {row['flash']:,} B, RAM {row['ram']:,} B (data + bss + "
                    f"stack), {row['cycles']:,.0f} cycles per act (mean over the teacher's recorded states; "
                    f"max {row['cycles_max']:,}); build: cd {path} && make"]
        if format == "c":
            try:
                size = exports.flash_size(path)
                sizes = f": {size['text']:,} bytes of flash (code + weights), {size['bss']:,} of RAM"
            except (OSError, subprocess.CalledProcessError):  # no compiler or binutils here: the files are fine
                sizes = ""
            return [f"wrote {path}/policy.c, policy.h, main.c, Makefile from trial {trial}{sizes}; build it with "
                    "the flags its latency was measured with:", f"  cd {path} && make    # = {BUILD}"]
        r = export_report(format, path, Path(row["artifact"]).read_bytes(), self.teacher_obs(EXPORT_OBS),
                          row.get("kernels"))
        return [f"wrote {path} ({path.stat().st_size:,} bytes) from trial {trial}", "  " + export_words(r)]

    def teacher_obs(self, steps: int | None = None) -> np.ndarray:
        """Observations the teacher visits in the trial spec's env, as the search's trials sample them
        (`spec.sample_steps` steps, default; episodes seeded from `spec.seed`), in the numpy runtime."""
        spec = self.trial_spec()
        teacher = NumpyPolicy.from_bytes(heldout.teacher_artifact(self.rows(), spec, self.run_dir))
        return measure.collect_obs(teacher.act, spec.env_creator(), steps or spec.sample_steps, spec.seed)

    def trial_row(self, trial: int) -> dict:
        """The row of COMPLETE trial `trial`; a ConfigError that says why where there is none."""
        match = [r for r in self.rows() if r["trial"] == trial]
        if match:
            return match[0]
        known = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        if trial in known:
            t = known[trial]
            why = TrialRecord.of(t).fail_reason or ""
            raise ConfigError(f"trial {trial} is {t.state.name}, not COMPLETE" + (f": {why.splitlines()[-1][:300]}"
                                                                                  if why else ""), option="trial")
        raise ConfigError(f"no trial {trial} in {self.run_dir} (trials 0..{max(known, default=-1)})", option="trial")

    def register(self, trial: int, name: str, *, alias: str | None = "champion", tracking_uri: str | None = None,
                 log: Log = _quiet) -> dict[str, Any]:
        """Register COMPLETE trial `trial`'s MLflow model (`runs:/<its child run>/policy`, logged by the
        search) in the MLflow Model Registry as a new version of `name`, with its measurements as version
        tags (trial, config, return_mean, return_ratio, latency_ms, latency_ratio, bytes, bytes_ratio,
        runtime; fresh_return_mean, fresh_return_ratio, fresh_episodes where `pick` reported the trial on fresh
        episodes) and `alias` (None: none) set to that version. The store is the one the search logged to
        (default: sqlite in the run dir), or `tracking_uri`. Returns name, version, alias, run_id,
        model_id, model_uri (load it with `mlflow.pyfunc.load_model(model_uri)`) and the tags.

        >>> import autocompress as ac
        >>> run = ac.Run.load(RUN_DIR)
        >>> v = run.register(run.pick(min_return_ratio=0.0, minimize="bytes").trial, "cartpole-policy")
        >>> v["model_uri"], v["version"] >= 1
        ('models:/cartpole-policy@champion', True)
        """
        tracking.check_registry_names(name, alias)
        checks.tracking_uri(tracking_uri)
        row = self.trial_row(trial)
        uri = tracking.run_uri(self.run_dir, self.state, tracking_uri)
        tracking.check_reachable(uri)
        tags = {"trial": trial, "config": json.dumps(row["config"], sort_keys=True),
                **{k: row[k] for k in ("return_mean", "return_ratio", "latency_ms", "latency_ratio", "bytes",
                                       "bytes_ratio", "runtime") if row.get(k) not in (None, "")}}
        fresh = StudyAttrs(self.study).fresh(trial) or {}  # what pick measured it on apart from its choice
        tags.update({f"fresh_{k}": fresh[k] for k in ("return_mean", "return_ratio", "episodes") if k in fresh})
        return tracking.register_policy(uri, self.state["study_name"], self.state.get("parent_run_id"), trial, name,
                                        alias, tags, Path(row["artifact"]), row, self.run_dir, log=log)

    def trial_spec(self) -> TrialSpec:
        """The trial spec the search ran (read again from its space file)."""
        return load_search_space(self.state["space"])[1]

    def reevaluate(self, trials: list[int] | None = None, *, episodes: int = 100, seed: int | None = None,
                   runtime: Literal["auto", "c", "numpy"] | None = None) -> dict[int | str, dict[str, float]]:
        """Return of the teacher ('teacher') and of `trials` (default: the front) on `episodes` fresh
        seeded episodes (episode i reset with seed + i; default: the spec's eval.heldout_seed; ConfigError
        where they overlap seeds the trials used), with the return ratio to the teacher on the same
        episodes; `runtime` default: the study's. Measures only: `evaluate_heldout` also stores the values.

        >>> import autocompress as ac
        >>> again = ac.Run.load(RUN_DIR).reevaluate([0], episodes=2)
        >>> list(again), again[0]["return_ratio"] == 1.0   # trial 0: the teacher as-is
        (['teacher', 0], True)
        """
        spec = measure.heldout_spec(self.trial_spec(), episodes, seed)
        runtime = runtime or StudyAttrs(self.study).runtime or "auto"
        all_rows = self.rows()
        by_number = {r["trial"]: r for r in all_rows}
        wanted = [r.trial for r in self.front()] if trials is None else list(trials)
        missing = [t for t in wanted if t not in by_number]
        if missing:
            raise ConfigError(f"trial {missing[0]} is not a COMPLETE trial of {self.run_dir}", option="trials")
        jobs = heldout.policies(all_rows, [by_number[n] for n in wanted], self.run_dir, spec)
        return heldout.heldout_values(jobs, spec, runtime)

    def where_to_look(self) -> list[str]:
        """The closing lines of a search (`where_to_look`)."""
        return where_to_look(self.run_dir, self.state)

    def sync(self, tracking_uri: str | None = None, storage: str | None = None, log: Log = _quiet) -> dict:
        """Log to MLflow what it missed (idempotent); see `autocompress.sync`."""
        return sync_run(self.run_dir, storage, tracking_uri, log=log)


def where_to_look(run_dir: Path, state: dict) -> list[str]:
    """The closing lines of a search: the run dir, how to open the MLflow UI and the direct links into
    it (the runs table, the 3-D Pareto plot), and the optuna-dashboard command for the study."""
    uri = state.get("tracking_uri")
    lines = [f"run dir: {run_dir}"]
    if uri and not uri.startswith(("http://", "https://")):
        lines.append(f"MLflow UI: mlflow ui --backend-store-uri {uri}   (then open the links below)")
    else:
        lines.append(f"MLflow UI: {mlflow_ui_base(uri)}")
    exp = state.get("experiment_id") or _experiment_id(uri, state.get("parent_run_id"))
    if exp is not None:
        links = mlflow_ui_links(uri, exp, state.get("parent_run_id"))
        lines.append(f"  trial runs:   {links['runs']}")
        if "pareto" in links:
            lines.append(f"  Pareto plot:  {links['pareto']}")
    storage = state.get("storage") or str(Path(run_dir) / JOURNAL)  # a journal file: optuna-dashboard opens it as is
    lines.append(f"Optuna dashboard: pip install optuna-dashboard && optuna-dashboard {storage}")
    return lines


def _experiment_id(uri: str | None, parent_run_id: str | None) -> str | None:
    """The parent run's experiment, for run dirs written before search.json recorded it."""
    if not uri or not parent_run_id or is_redacted(uri):
        return None
    try:
        return MlflowClient(tracking_uri=uri).get_run(parent_run_id).info.experiment_id
    except Exception:  # offline or gone: the closing lines go without links
        return None
