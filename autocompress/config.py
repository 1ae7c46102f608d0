"""Load and validate YAML into typed objects; every error names the file and the key.

Two kinds of file:
  trials/*.yaml     TrialSpec: how one trial runs (env, algorithm, teacher, fine-tune,
                    evaluation, latency protocol, resources).
  compress configs  CompressConfig: which techniques, with which settings, e.g.
                    {prune: {sparsity: 0.9}, quantize: {bits: 4, mode: qat}}.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from autocompress import envs, seeds
from autocompress.algos import ALGOS
from autocompress.conv import geometry_chain
from autocompress.errors import ConfigError
from autocompress.targets import target
from autocompress.techniques import CRITIC_TECHNIQUES, TECHNIQUES, TechniqueConfig
from autocompress.techniques.per_layer import check_counts, layer_count

if TYPE_CHECKING:
    import gymnasium as gym


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RnnSpec(_Strict):
    """A recurrent layer in the trained teacher (and its critic): the policy carries a state between steps."""

    cell: Literal["lstm", "gru"] = "lstm"
    hidden: int = Field(64, ge=1, description="units of the cell (its state: h, and c for an LSTM)")
    after: int | None = Field(None, ge=0, description="hidden layers before the cell (0: it reads the observation) "
                              "[default: all of them, as RLlib's use_lstm: the cell, then the output layer]")
    max_seq_len: int = Field(20, ge=1, description="RLlib trains on chunks of episodes this many steps long, the "
                             "state carried over each chunk from where the rollout had it")

    def layers_before(self, hidden: list[int]) -> int:
        """Hidden layers before the cell, of a net with these widths (a student may have fewer than `after`)."""
        return len(hidden) if self.after is None else min(self.after, len(hidden))


class TeacherSpec(_Strict):
    """Either training settings (the teacher is trained with RLlib), or `from: PATH`: the user's own
    trained policy, imported (see autocompress/sources): the architecture is read from the file."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: str | None = Field(None, alias="from", description="import this trained policy: an SB3 .zip, an RLlib "
                              "checkpoint dir, or a PyTorch state dict (.pt/.pth) with an architecture YAML beside it")
    format: Literal["auto", "sb3", "rllib", "torch"] = Field("auto", description="format of `from` [default: detected]")
    vecnormalize: str | None = Field(None, description="SB3 VecNormalize statistics (.pkl) [default: "
                                     "vec_normalize.pkl or <zip stem>_vecnormalize.pkl beside the zip]")
    critic_warmup: int = Field(3, ge=0, description="imported policy without a critic (value / Q nets): RLlib "
                               "iterations that train a critic with the actor frozen before fine-tuning")
    conv_filters: list[list[Any]] | None = Field(None, min_length=1, description="a conv encoder before the hidden "
                                                 "layers, in RLlib's format: [[channels, kernel, stride(, 'same' | "
                                                 "'valid')], ...] (padding 'same' by default), e.g. [[16, 3, 1]]")
    obs_layout: Literal["hwc", "chw"] = Field("hwc", description="conv encoder: image observations channels-last "
                                              "(H, W, C: Gymnasium's, RLlib's, MinAtar's) or channels-first")
    hidden: list[int] = Field([256, 256], min_length=1)
    activation: Literal["tanh", "relu", "silu", "elu"] = "tanh"
    critic_hidden: list[int] | None = Field(None, min_length=1, description="critic / Q-net widths "
                                            "(training only, never deployed) [default: hidden]")
    max_iterations: int = Field(40, ge=1, description="RLlib train() calls at most")
    stop_return: float | None = Field(None, description="stop once a deterministic 5-episode check reaches this")
    normalize_obs: bool = Field(False, description="train on running mean/std-normalised observations (RLlib's "
                                "MeanStdFilter); the frozen statistics go into every exported artifact")
    rnn: RnnSpec | None = Field(None, description="an LSTM / GRU layer, e.g. {cell: lstm, hidden: 64}: for "
                                "partially observable envs, where acting needs memory")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v):
        if any(w < 1 for w in v):
            raise ValueError("widths must be >= 1")
        return v

    @field_validator("conv_filters")
    @classmethod
    def _filters(cls, v):
        for i, f in enumerate(v or []):
            ok = isinstance(f, list) and len(f) in (3, 4) and _pos_int(f[0]) and _pos_pair(f[1]) and _pos_pair(f[2]) \
                and (len(f) == 3 or f[3] in ("same", "valid"))
            if not ok:
                raise ValueError(f"conv_filters[{i}] = {f!r}: give [channels, kernel, stride] or [channels, kernel, "
                                 f"stride, 'same' | 'valid'] (kernel, stride: an int or [h, w], >= 1)")
        return v

    def n_layers(self, critic: bool = False) -> int | None:
        """Layers of the trained teacher's deployed net, or of its (PPO) critic, which has the same conv
        encoder (rl.algo_config) before its own widths. None: imported, read from its file."""
        if self.from_:
            return None
        return layer_count(len(self.conv_filters or []), self._widths(critic)) + (self.rnn is not None)  # the cell

    def describe_layers(self, critic: bool = False) -> str:
        """Where n_layers(critic) comes from, for messages."""
        hidden = f"the critic's hidden {self._widths(critic)}" if critic else f"hidden {self.hidden}"
        if self.conv_filters:
            return f"teacher.conv_filters + {hidden}"
        named = hidden if critic else f"teacher.{hidden}"
        return named + (f" + an {self.rnn.cell} layer (teacher.rnn)" if self.rnn is not None else "")

    def _widths(self, critic: bool) -> list[int]:
        return list(self.critic_hidden or self.hidden) if critic else list(self.hidden)


def _pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _pos_pair(v) -> bool:
    return _pos_int(v) or (isinstance(v, list) and len(v) == 2 and all(_pos_int(x) for x in v))


class FinetuneSpec(_Strict):
    iterations: int = Field(5, ge=0, description="RLlib train() calls after compression")
    lr: float = Field(1e-4, gt=0, lt=1)
    keep_best: bool = Field(False, description="after every iteration (and before the first) check the net on "
                                               "check_episodes seeded episodes apart from the evaluation seeds and "
                                               "keep the best: off-policy fine-tunes (DQN, SAC) swing from one "
                                               "iteration to the next")
    check_episodes: int = Field(seeds.CHECK_EPISODES, ge=1, le=1000, description=(
        "episodes of the fine-tune's check (keep_best's choice, and the ratio early stopping and finish_at "
        "read), on seeds seed + 77777 ..: where returns spread widely between episodes, more of them (a few "
        "seconds a check) keep the check from choosing on noise"))
    teacher_reference: bool = Field(False, description="a search also fine-tunes the teacher itself once, with these "
                                    "settings and no technique, and shows it as a reference row beside the front "
                                    "(not a trial: never on the front, not counted in the budget): what "
                                    "compression costs vs what fine-tuning alone adds")


class EvalSpec(_Strict):
    episodes: int = Field(20, ge=1)
    seed: int = Field(10_000, ge=0, description="episode i is reset with seed + i")
    heldout_seed: int = Field(1_000_000, ge=0, description="held-out re-evaluation (end of a search, `pareto "
                              "--reevaluate`): episode i is reset with heldout_seed + i")
    heldout_episodes: int = Field(100, ge=0, description="held-out episodes per front member and the teacher at "
                                  "the end of a search (0: none)")
    fresh_seed: int = Field(5_000_000, ge=0, description="`pick` reports the trial it chose on episodes it was not "
                            "chosen on: episode i is reset with fresh_seed + i")
    fresh_episodes: int = Field(100, ge=0, description="episodes `pick` acts the chosen trial and the teacher on, "
                                "apart from the held-out ones it chose on (0: none; pick then says it reports the "
                                "return it chose on)")
    reference_return: float | None = Field(None, allow_inf_nan=False, description=(
        "the return a useless policy gets on this env, if you know it better than a uniform-random policy "
        "measured on the evaluation episodes (the default): the teacher must clearly beat it, and return "
        "ratios are (return - reference) / (teacher's - reference)"))


#: the settings only `pick` reads: no trial measures anything with them, so the keys of what trials measured
#: (study.reuse_key, the reference's) leave them out, as they were before these settings existed
PICK_ONLY = {"eval": {"fresh_seed", "fresh_episodes"}}


class LatencySpec(_Strict):
    runtime: Literal["auto", "c", "numpy"] = Field(
        "auto", description="runtime that acts in evaluation and latency: 'c' (compiled kernels; latency timed "
                            "inside C), 'numpy' (latency: the Python call), or 'auto' = c where a C compiler is "
                            "found, else numpy; resolved once per study")
    warmup: int = Field(200, ge=0)
    calls: int = Field(2000, ge=10, description="Python-call timing: calls per policy, in `rounds` blocks")
    rounds: int = Field(10, ge=1)
    kernel_rounds: int = Field(200, ge=5, description="in-kernel timing (runtime c): rounds, each policy in turn "
                                                      "running kernel_calls acts; short blocks, so that a "
                                                      "preemption on a busy machine spoils few of them")
    kernel_calls: int = Field(20, ge=1)
    target: str = Field("host", description="where the policy runs (autocompress.targets): 'host' times it in "
                                            "process; an MCU target ('cortex-m0plus', 'cortex-m4f', 'cortex-m7') "
                                            "cross-builds its C export and counts cycles per act in an emulator")
    clock_mhz: float | None = Field(None, gt=0, description="an MCU target's clock (default: the target's), for "
                                                           "cycles shown as time")
    max_flash: int | None = Field(None, ge=1, description="an MCU target's flash budget, bytes (a search space's "
                                                          "constraints.max_flash): a net over it with its fastest "
                                                          "kernels runs smaller forms at their cycle cost")

    @field_validator("target")
    @classmethod
    def _known_target(cls, v):
        target(v)  # ConfigError naming the known targets
        return v


class ResourcesSpec(_Strict):
    num_cpus: float = Field(1, gt=0)
    timeout_s: float = Field(1800, gt=0)


class TrialSpec(_Strict):
    """How one trial runs: env, algorithm, teacher, fine-tune budget, evaluation, latency protocol,
    resources (a trials/*.yaml file; `load_trial_spec(path)`)."""

    name: str
    env: str
    env_config: dict[str, Any] = {}
    algorithm: Literal["PPO", "DQN", "SAC"] = "PPO"
    seed: int = 0
    teacher: TeacherSpec = TeacherSpec()
    training: dict[str, Any] = Field({}, description="keyword arguments for RLlib's AlgorithmConfig.training()")
    reporting: dict[str, Any] = Field({}, description="keyword arguments for AlgorithmConfig.reporting(), e.g. "
                                                      "min_sample_timesteps_per_iteration")
    finetune: FinetuneSpec = FinetuneSpec()
    eval: EvalSpec = EvalSpec()
    latency: LatencySpec = LatencySpec()
    resources: ResourcesSpec = ResourcesSpec()
    sample_steps: int = Field(2000, ge=10, description="teacher-visited states for data-driven techniques")

    @field_validator("env")
    @classmethod
    def _env_exists(cls, v):
        envs.resolve(v)
        return v

    @model_validator(mode="after")
    def _conv_fits(self):
        """A conv encoder fits the env's observations (rank, layout, never below 1x1): checked here, before Ray."""
        f = self.teacher.conv_filters
        if f is None:
            return self
        if self.teacher.from_:
            raise ValueError("teacher.conv_filters: an imported teacher's layers are read from its file")
        if not ALGOS[self.algorithm].conv_encoder:
            raise ValueError("teacher.conv_filters: conv encoders are supported for "
                             + " and ".join(n for n, a in ALGOS.items() if a.conv_encoder)
                             + f" ({self.algorithm}: {ALGOS[self.algorithm].critic_note})")
        env = self.env_creator()()
        try:
            shape = tuple(env.observation_space.shape or ())
        finally:
            env.close()
        try:
            geometry_chain(shape, self.teacher.obs_layout, f)
        except ValueError as e:
            raise ValueError(f"teacher.conv_filters / obs_layout on {self.env}: {e}") from None
        return self

    @model_validator(mode="after")
    def _rnn_fits(self):
        """A recurrent teacher is one our modules can train: checked here, before Ray."""
        rnn, t = self.teacher.rnn, self.teacher
        if rnn is None:
            return self
        if t.from_:
            raise ValueError("teacher.rnn: an imported teacher's layers are read from its file")
        if not ALGOS[self.algorithm].recurrent:
            raise ValueError(f"teacher.rnn: recurrent teachers are trained with "
                             + " and ".join(n for n, a in ALGOS.items() if a.recurrent) + f", not {self.algorithm}")
        if t.conv_filters:
            raise ValueError("teacher.rnn: a recurrent teacher with a conv encoder is not built yet")
        if rnn.after is not None and rnn.after > len(t.hidden):
            raise ValueError(f"teacher.rnn.after {rnn.after}: at most the {len(t.hidden)} hidden layers")
        return self

    @model_validator(mode="after")
    def _seeds_apart(self):
        seeds.check(self)  # ValueError naming the keys whose seed ranges overlap (see autocompress/seeds.py)
        return self

    def env_creator(self) -> Callable[[], gym.Env]:
        """Makes a fresh env of this spec (its `env` with its `env_config`) on each call."""
        return envs.env_creator(self.env, self.env_config)

    def updated(self, changes: dict[str, Any]) -> "TrialSpec":
        """A copy with `changes` merged in (nested mappings merge key by key), validated again.

        >>> spec = load_trial_spec("trials/cartpole_ppo.yaml").updated({"eval": {"episodes": 3}})
        >>> spec.eval.episodes, spec.eval.seed
        (3, 10000)
        """
        return parse(TrialSpec, _merge(self.model_dump(exclude_none=True), changes), f"{self.name} (updated)")

    def teacher_key(self) -> dict[str, Any]:
        """What determines the teacher: a change here trains (or imports) a new one."""
        if self.teacher.from_:  # an imported teacher: its file's content, not training settings
            return {**self.model_dump(include={"env", "env_config", "algorithm"}),
                    "import": {"format": self.teacher.format, "sha256": _files_sha256(self.teacher.from_,
                                                                                      self.teacher.vecnormalize)}}
        key = self.model_dump(include={"env", "env_config", "algorithm", "seed", "teacher", "training", "reporting"},
                              exclude_none=True)
        if not self.teacher.normalize_obs:  # the keys (cache names) of teachers from before the option stay valid
            del key["teacher"]["normalize_obs"]
        if not self.teacher.conv_filters:  # likewise: an MLP's key does not depend on how images would be read
            del key["teacher"]["obs_layout"]
        for k in ("format", "critic_warmup"):  # import settings: not part of a trained teacher's key
            del key["teacher"][k]
        return key


class _Techniques(_Strict):
    """A set of techniques (each field one technique's config or None), run by the pipeline in
    its canonical order whatever the YAML order. Built from the technique registry below."""

    #: how its keys are named in messages ("critic." for the critic's techniques)
    where: ClassVar[str] = ""

    def techniques(self) -> list[TechniqueConfig]:
        return [c for c in (getattr(self, n, None) for n in TECHNIQUES) if c is not None]

    def check_layers(self, n_layers: int | None, about: str = "", conv_layers: int = 0, recurrent: bool = False) -> None:
        """Per-layer lists and maps (techniques/per_layer.py) against the net they compress: `n_layers`
        layers (None: not known yet, e.g. an imported teacher's before it is loaded), or distill's
        student's when distill is on (`conv_layers`: the teacher's, which a student without
        `channels` keeps). Raises ConfigError naming the key."""
        distill = getattr(self, "distill", None)
        if distill is not None:
            n_layers = distill.n_layers(conv_layers, recurrent)
            convs = n_layers - len(distill.hidden) - 1 - recurrent
            about = f"distill.hidden {list(distill.hidden)}" + (f" after {convs} conv layers" if convs else "") + \
                (" with its cell" if recurrent else "")
        for c in self.techniques() if n_layers is not None else []:
            try:
                check_counts(c, n_layers, about)
            except ConfigError as e:
                raise ConfigError(f"{self.where}{e}") from None

    @model_validator(mode="after")
    def _one_per_group(self):
        by_group: dict[str, list[str]] = {}
        for c in self.techniques():
            if c.group:
                by_group.setdefault(c.group, []).append(c.name)
        for group, names in by_group.items():
            if len(names) > 1:
                raise ValueError(f"{' and '.join(names)} both enabled: they exclude each other (one {group} "
                                 "technique at most); enable one of them")
        return self


class _CriticBase(_Techniques):
    where: ClassVar[str] = "critic."


CriticCompressConfig = create_model(
    "CriticCompressConfig", __base__=_CriticBase,
    __doc__="Compression of the training-only value net (PPO's critic): never deployed, never counted in "
            "the objectives; it is what fine-tuning (e.g. on a device) would carry.",
    **{n: (c | None, None) for n, c in CRITIC_TECHNIQUES.items()})


class _CompressBase(_Techniques):
    def check_against(self, spec: TrialSpec, source: str | Path | None = None) -> None:
        """Cross-checks that need the trial spec. Raises ConfigError (prefixed with `source`, the
        config's file, when given)."""
        try:
            self._check_against(spec)
        except ConfigError as e:
            if source is None:
                raise
            raise ConfigError(f"{source}: {e}") from None

    def _check_against(self, spec: TrialSpec) -> None:
        if self.critic is not None and not ALGOS[spec.algorithm].own_critic:
            raise ConfigError(f"critic: only PPO's value net can be compressed ({spec.algorithm}: "
                              f"{ALGOS[spec.algorithm].critic_note})")
        for where, group in (("", self), ("critic.", self.critic)):
            for c in (group.techniques() if group is not None else []):
                try:
                    c.check_against(spec)
                except ValueError as e:
                    raise ConfigError(f"{where}{e}") from None
        if getattr(self, "distill", None) is not None:  # its rollouts' seeds, exactly (the spec assumed defaults)
            try:
                seeds.check(spec, distill=self.distill)
            except ValueError as e:
                raise ConfigError(f"distill: {e}") from None
        # per-layer settings fit the layers (an imported teacher's are in its file: checked when it is loaded)
        t = spec.teacher
        self.check_layers(t.n_layers(), t.describe_layers(), len(t.conv_filters or []), t.rnn is not None)
        if self.critic is not None:
            self.critic.check_layers(t.n_layers(critic=True), t.describe_layers(critic=True))


CompressConfig = create_model(
    "CompressConfig", __base__=_CompressBase,
    __doc__="Techniques to apply, e.g. {prune: {sparsity: 0.9}, quantize: {bits: 4, mode: qat}}; "
            "`critic:` (PPO) compresses the value net with its own settings.",
    **{n: (c | None, None) for n, c in TECHNIQUES.items()}, critic=(CriticCompressConfig | None, None))
"""Techniques to apply, e.g. {prune: {sparsity: 0.9}, quantize: {bits: 4, mode: qat}}; `critic:` (PPO) compresses the
value net with its own settings (a pydantic model with one optional field per technique of TECHNIQUES)."""


def _files_sha256(*paths: str | None) -> str:
    """One hash over the bytes of the given files (every file under a directory, in sorted order)."""
    h = hashlib.sha256()
    for p in filter(None, paths):
        p = Path(p)
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _format(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        lines.append(f"{source}: {key}: {msg}{got}" if err["loc"] else f"{source}: {msg}")  # a cross-key check
    return "\n".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file (undecodable byte at offset {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse(model: type[BaseModel], data: dict[str, Any], source: str):
    if model is CompressConfig:
        unknown = sorted(set(data) - set(TECHNIQUES) - {"critic"})
        if unknown:
            raise ConfigError(f"{source}: unknown technique {unknown[0]!r}; known: {', '.join(TECHNIQUES)}")
        data = {k: ({} if v is None else v) for k, v in data.items()}
        if isinstance(data.get("critic"), dict):
            unknown = sorted(set(data["critic"]) - set(CRITIC_TECHNIQUES))
            if unknown:
                raise ConfigError(f"{source}: critic: unknown or unsupported technique {unknown[0]!r}; known: "
                                  f"{', '.join(CRITIC_TECHNIQUES)}")
            data["critic"] = {k: ({} if v is None else v) for k, v in data["critic"].items()}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e, source)) from None


def load_trial_spec(path: str | Path) -> TrialSpec:
    """A trial spec from YAML; ConfigError naming the file and the key when anything is wrong.
    Relative paths in it (teacher.from, teacher.vecnormalize) are relative to the spec's file."""
    data = read_yaml(path)
    teacher = data.get("teacher")
    if isinstance(teacher, dict):
        for key in ("from", "vecnormalize"):
            if isinstance(teacher.get(key), str) and not Path(teacher[key]).is_absolute():
                teacher[key] = str((Path(path).parent / teacher[key]).resolve())
    spec = parse(TrialSpec, data, str(path))
    for key, value in (("from", spec.teacher.from_), ("vecnormalize", spec.teacher.vecnormalize)):
        if value and not Path(value).exists():
            raise ConfigError(f"{path}: teacher.{key}: {value} does not exist")
    return spec


def load_compress_config(path: str | Path) -> CompressConfig:
    """A techniques config from YAML; ConfigError naming the file and the key when anything is wrong."""
    return parse(CompressConfig, read_yaml(path), str(path))
