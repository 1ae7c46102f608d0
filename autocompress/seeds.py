"""Which episode seeds each part of a trial resets its env with, and the rule that keeps them apart.

A trial resets envs with seeds derived from its spec (episode j of a part resets with start + j):

  part                      seeds                                               role
  fine-tune (RLlib)         seed (its one env; later episodes continue its RNG)  train
  sample_obs                seed .. seed + sample_steps - 1                     train
  distillation rollouts     seed + 7919·k .. + distill.steps_per_round - 1,     train
                            k = 1 .. distill.rounds - 1
  keep_best / teacher check seed + 77777 .. + max(5, finetune.check_episodes) - 1   select
  layer sensitivity         300000 .. 300099 (at most 100 episodes)              select
  evaluation                eval.seed .. eval.seed + eval.episodes - 1          measure
  held-out re-evaluation    eval.heldout_seed .. + eval.heldout_episodes - 1    measure
  pick's fresh report       eval.fresh_seed .. + eval.fresh_episodes - 1        measure

Ranges are upper bounds where the episode count is not known in advance (at most one episode per
env step). The rule: a part that measures shares no seed with any other part, and the checks that
select (keep_best) share none with training. Training parts may share seeds among themselves
(fine-tuning, sample_obs and distillation all start at `seed`: all are training data, and keeping
them so leaves today's trials as they were). `check` raises one ValueError naming the keys.
Pure Python: no framework imports.
"""

from __future__ import annotations

from dataclasses import dataclass

#: keep_best's checks (pipeline.py) and the teacher's stop_return check (teacher.py): spec.seed + this ...
CHECK_OFFSET = 77_777
#: ... over this many episodes (the teacher's; the fine-tune's is finetune.check_episodes, this by default)
CHECK_EPISODES = 5
#: distillation rollout k (after round k) starts at spec.seed + k * DISTILL_STRIDE (techniques/distill.py)
DISTILL_STRIDE = 7919
#: layer sensitivity's episodes (autocompress/layer_sensitivity.py): SENSITIVITY_SEED + i, i < this
SENSITIVITY_SEED, SENSITIVITY_MAX_EPISODES = 300_000, 100
#: distill's defaults, assumed when a spec is checked without a techniques config
DISTILL_DEFAULT_ROUNDS, DISTILL_DEFAULT_STEPS = 3, 2000


@dataclass(frozen=True)
class SeedRange:
    what: str                          # e.g. "evaluation"
    keys: str                          # the spec keys that set it, e.g. "eval.seed + eval.episodes"
    role: str                          # train | select | measure
    spans: tuple[tuple[int, int], ...]  # inclusive [lo, hi] ranges

    def text(self) -> str:
        return ", ".join(f"{lo}..{hi}" if hi > lo else str(lo) for lo, hi in self.spans)


def ranges(spec, distill=None, heldout_episodes: int | None = None) -> list[SeedRange]:
    """Every part's seeds for `spec` (a config.TrialSpec; not imported here: config imports this
    module); `distill` (a DistillConfig) gives the exact rollouts, else distill's defaults are
    assumed; `heldout_episodes` overrides eval.heldout_episodes."""
    s, ev = spec.seed, spec.eval
    rounds = distill.rounds if distill is not None else DISTILL_DEFAULT_ROUNDS
    steps = distill.steps_per_round if distill is not None else DISTILL_DEFAULT_STEPS
    held = ev.heldout_episodes if heldout_episodes is None else heldout_episodes
    out = [
        SeedRange("fine-tuning (RLlib)", "seed", "train", ((s, s),)),
        SeedRange("sample_obs collection", "seed + sample_steps", "train",
                  ((s, s + spec.sample_steps - 1),)),
        SeedRange("distillation rollouts", f"seed + {DISTILL_STRIDE}·k, distill.rounds {rounds}, "
                  f"distill.steps_per_round {steps}", "train",
                  tuple((s + DISTILL_STRIDE * k, s + DISTILL_STRIDE * k + steps - 1) for k in range(1, rounds))),
        SeedRange("keep_best / teacher checks", f"seed + {CHECK_OFFSET}, finetune.check_episodes", "select",
                  ((s + CHECK_OFFSET, s + CHECK_OFFSET + max(CHECK_EPISODES, spec.finetune.check_episodes) - 1),)),
        SeedRange("layer sensitivity", "fixed", "select",
                  ((SENSITIVITY_SEED, SENSITIVITY_SEED + SENSITIVITY_MAX_EPISODES - 1),)),
        SeedRange("evaluation", "eval.seed + eval.episodes", "measure", ((ev.seed, ev.seed + ev.episodes - 1),)),
    ]
    if held > 0:
        out.append(SeedRange("held-out re-evaluation", "eval.heldout_seed + eval.heldout_episodes", "measure",
                             ((ev.heldout_seed, ev.heldout_seed + held - 1),)))
    if ev.fresh_episodes > 0:
        out.append(SeedRange("pick's fresh report", "eval.fresh_seed + eval.fresh_episodes", "measure",
                             ((ev.fresh_seed, ev.fresh_seed + ev.fresh_episodes - 1),)))
    return [r for r in out if r.spans]


def _shared(a: SeedRange, b: SeedRange) -> list[tuple[int, int]]:
    return [(max(lo, lo2), min(hi, hi2)) for lo, hi in a.spans for lo2, hi2 in b.spans if max(lo, lo2) <= min(hi, hi2)]


def overlaps(rs: list[SeedRange]) -> list[tuple[SeedRange, SeedRange, list[tuple[int, int]]]]:
    """Pairs that break the rule (see the module doc), with the seeds they share."""
    out = []
    for i, a in enumerate(rs):
        for b in rs[i + 1:]:
            if a.role == b.role == "train":
                continue
            shared = _shared(a, b)
            if shared:
                out.append((a, b, shared))
    return out


def check(spec, distill=None, heldout_episodes: int | None = None) -> None:
    """ValueError naming every pair of parts that would reset envs with the same seeds."""
    bad = overlaps(ranges(spec, distill, heldout_episodes))
    if not bad:
        return
    lines = [f"{a.what} ({a.keys}: seeds {a.text()}) and {b.what} ({b.keys}: seeds {b.text()}) share seeds "
             + ", ".join(f"{lo}..{hi}" if hi > lo else str(lo) for lo, hi in shared)
             for a, b, shared in bad]
    raise ValueError("seed ranges overlap: " + "; ".join(lines) + ". Evaluation, held-out and fresh episodes must "
                     "be ones nothing trained or selected on: change eval.seed, eval.heldout_seed, eval.fresh_seed or "
                     "seed (a seed range is an upper bound: at most one episode per env step)")
