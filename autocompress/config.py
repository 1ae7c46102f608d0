"""Load and validate YAML into typed objects; every error names the file and the key.

Two kinds of file:
  trials/*.yaml     TrialSpec: how one trial runs (env, algorithm, teacher, fine-tune,
                    evaluation, latency protocol, resources).
  compress configs  CompressConfig: which techniques, with which settings, e.g.
                    {prune: {sparsity: 0.9}, quantize: {bits: 4, mode: qat}}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autocompress import envs
from autocompress.errors import ConfigError
from autocompress.techniques import (DistillConfig, LowRankConfig, PruneConfig, QuantizeConfig, ShareConfig,
                                     StructuredConfig, TECHNIQUES)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeacherSpec(_Strict):
    hidden: list[int] = Field([256, 256], min_length=1)
    activation: Literal["tanh", "relu"] = "tanh"
    critic_hidden: list[int] | None = Field(None, min_length=1, description="critic / Q-net widths "
                                            "(training only, never deployed) [default: hidden]")
    max_iterations: int = Field(40, ge=1, description="RLlib train() calls at most")
    stop_return: float | None = Field(None, description="stop once a deterministic 5-episode check reaches this")
    normalize_obs: bool = Field(False, description="train on running mean/std-normalised observations (RLlib's "
                                "MeanStdFilter); the frozen statistics go into every exported artifact")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v):
        if any(w < 1 for w in v):
            raise ValueError("widths must be >= 1")
        return v


class FinetuneSpec(_Strict):
    iterations: int = Field(5, ge=0, description="RLlib train() calls after compression")
    lr: float = Field(1e-4, gt=0, lt=1)
    keep_best: bool = Field(False, description="after every iteration (and before the first) check the net on 5 "
                                               "seeded episodes apart from the evaluation seeds and keep the best: "
                                               "off-policy fine-tunes (DQN, SAC) swing from one iteration to the next")


class EvalSpec(_Strict):
    episodes: int = Field(20, ge=1)
    seed: int = Field(10_000, ge=0, description="episode i is reset with seed + i")


class LatencySpec(_Strict):
    runtime: Literal["auto", "c", "numpy"] = Field(
        "auto", description="runtime that acts in evaluation and latency: 'c' (compiled kernel, one call per "
                            "act), 'numpy', or 'auto' = c where a C compiler is found, else numpy")
    warmup: int = Field(200, ge=0)
    calls: int = Field(2000, ge=10)
    rounds: int = Field(10, ge=1)


class ResourcesSpec(_Strict):
    num_cpus: float = Field(1, gt=0)
    timeout_s: float = Field(1800, gt=0)


class TrialSpec(_Strict):
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

    def teacher_key(self) -> dict[str, Any]:
        """What determines the teacher: a change here trains a new one."""
        key = self.model_dump(include={"env", "env_config", "algorithm", "seed", "teacher", "training", "reporting"},
                              exclude_none=True)
        if not self.teacher.normalize_obs:  # the keys (cache names) of teachers from before the option stay valid
            del key["teacher"]["normalize_obs"]
        return key


class CriticCompressConfig(_Strict):
    """Compression of the training-only value net (PPO's critic): never deployed, never counted in
    the objectives; it is what fine-tuning (e.g. on a device) would carry. No distillation."""

    structured: StructuredConfig | None = None
    lowrank: LowRankConfig | None = None
    prune: PruneConfig | None = None
    share: ShareConfig | None = None
    quantize: QuantizeConfig | None = None


#: techniques that may compress the critic (settings separate from the deployed net's)
CRITIC_TECHNIQUES = tuple(CriticCompressConfig.model_fields)


class CompressConfig(CriticCompressConfig):
    """Techniques to apply; the pipeline runs them in its canonical order, whatever the YAML order.
    `critic:` (PPO) compresses the value net with its own settings."""

    distill: DistillConfig | None = None
    critic: CriticCompressConfig | None = None

    def techniques(self) -> list:
        return [c for c in (getattr(self, n) for n in TECHNIQUES) if c is not None]

    def check_against(self, spec: TrialSpec) -> None:
        """Cross-checks that need the trial spec. Raises ConfigError."""
        for where, c in (("", self), ("critic.", self.critic)):
            if c is not None and c.share is not None and c.quantize is not None:
                raise ConfigError(f"{where}share and {where}quantize both enabled: a weight is either on a codebook "
                                  "or on a k-bit grid; enable one of them")
        if self.critic is not None and spec.algorithm != "PPO":
            raise ConfigError(f"critic: only PPO's value net can be compressed ({spec.algorithm}: "
                              + ("the Q-network is the deployed net itself" if spec.algorithm == "DQN" else
                                 "the twin Q nets are RLlib's own modules") + ")")
        if self.distill is not None:
            t, s = spec.teacher.hidden, list(self.distill.hidden)
            # Smaller = no deeper, no layer wider, and not the same widths.
            if len(s) > len(t) or any(a > b for a, b in zip(s, t)) or s == t:
                raise ConfigError(f"distill.hidden {s} is not smaller than the teacher's hidden {t}")


def _format(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        lines.append(f"{source}: {key}: {msg}{got}")
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
    return parse(TrialSpec, read_yaml(path), str(path))


def load_compress_config(path: str | Path) -> CompressConfig:
    return parse(CompressConfig, read_yaml(path), str(path))
