"""Every export format side by side: bytes, batch-1 latency in its own runtime, actions against the .acz runtime.

    python -m benchmarks.exports [--specs cartpole_ppo minatar_breakout_ppo]

For each spec's committed teacher (teachers/), two fixed configs (int8 symmetric; 90% pruned + int8 symmetric)
and the config of a search front's best point (FRONTS), each through `ac.compress` with
`finetune: {iterations: 0}`, in one run: the .tflite fp32 / int8, .pte fp32 / int8, ONNX, C export and .acz files.
Bytes: the file (the C export: text of policy.o as its Makefile builds it, i.e. flash, and bss beside it as
RAM). Latency: autocompress/exports/measure.py (batch 1, 1 thread, the format's own runtime called from Python,
the .acz in the C runtime interleaved with it on the same 200 teacher-visited states; median). Agreement: the
actions' share equal to the .acz runtime's on 1,000 teacher-visited states (the spec's seed). TFLite Micro's
arena bytes beside the C export's RAM.

Results are kept in docs/data/exports.json as they finish: a re-run measures only what is missing (benchmarks.report
renders them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import report
from benchmarks.common import ROOT, SEARCH_CODE, record_meta
from benchmarks.report import Section

STORE = ROOT / "docs" / "data" / "exports.json"
INT8 = {"quantize": {"bits": 8, "symmetric": True}}
POINTS = {"teacher": {}, "int8": INT8, "prune 90% + int8": {"prune": {"sparsity": 0.9}, **INT8}}
#: per spec, where the config of a search front's best point is recorded (re-run here as one trial): the
#: CartPole search on a Cortex-M0+ (benchmarks.mcu, its chosen point) and the MinAtar search (benchmarks.conv_search,
#: its front's fewest-bytes member at >= 0.95 held-out)
FRONTS = {"cartpole_ppo": "mcu_search.json", "minatar_breakout_ppo": "conv_search_minatar_breakout_ppo.json"}
FRONT_POINT = "front's best (recipe)"


def front_config(name: str) -> dict | None:
    """The config of the best point of the search recorded for `name` (FRONTS), None where there is none."""
    path = ROOT / "docs" / "data" / FRONTS.get(name, "-")
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if name == "cartpole_ppo":
        return data.get(name, {}).get("cortex-m0plus", {}).get("config")
    held = [m for m in data.get("search", {}).get("front", []) if m["heldout"] >= 0.95]
    return min(held, key=lambda m: m["bytes"])["config"] if held else None
FORMATS = {"tflite": "tflite", "tflite-int8": "tflite", "pte": "pte", "pte-int8": "pte", "onnx": "onnx",
           "c": "", "acz": "acz"}
N_AGREE, N_TIME = 1000, 200


def load_store() -> dict:
    return json.loads(STORE.read_text()) if STORE.exists() else {}


def save(store: dict) -> None:
    STORE.parent.mkdir(parents=True, exist_ok=True)
    STORE.write_text(json.dumps(store, indent=1, sort_keys=True))


def measure_format(fmt: str, data: bytes, kernels: list[str], obs, d: Path) -> dict:
    """One format of one artifact: what the section's table shows (or why it has no figures)."""
    from autocompress import exports
    from autocompress.exports import measure as em

    out = d / (f"policy.{FORMATS[fmt]}" if fmt != "c" else "c")
    try:
        exports.write(data, fmt, out, kernels if fmt in ("c", "acz") else None, obs=obs[:N_AGREE // 2])
    except ValueError as e:  # e.g. int8 of an fp32 net
        return {"skipped": str(e).split(";")[0]}
    if fmt == "c":
        size = exports.flash_size(out)
        return {"bytes": size["text"], "ram_bytes": size["bss"],
                "note": "no latency: main.c has no timer (its kernels are the C runtime's, same flags)"}
    r = em.report(fmt, out, data, obs[:N_TIME], kernels)
    r.update(em.agreement(fmt, out, data, obs, kernels))
    return r


def run_spec(name: str, store: dict, cache: Path) -> None:
    import autocompress as ac
    from autocompress import measure
    from autocompress.runtime import NumpyPolicy

    spec = ac.load_trial_spec(ROOT / "trials" / f"{name}.yaml").updated(
        {"finetune": {"iterations": 0}, "eval": {"episodes": 3}, "latency": {"calls": 200}})
    done = store.setdefault(name, {})
    teacher = NumpyPolicy.from_bytes(load_teacher_artifact(cache, name))
    obs = measure.collect_obs(teacher.act, spec.env_creator(), N_AGREE, spec.seed)  # the teacher's visited states
    front = front_config(name)
    for point, cfg in {**POINTS, **({FRONT_POINT: front} if front else {})}.items():
        if all(fmt in done.get(point, {}) for fmt in FORMATS):
            continue
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            t0 = time.time()
            r = ac.compress(spec, cfg, output_dir=d / "trial", cache_dir=cache)
            data = Path(r.artifact).read_bytes()
            row = done.setdefault(point, {})
            row["_trial"] = {"config": cfg, "kernels": r.kernels, "return_ratio": r.return_ratio,
                             "seconds": time.time() - t0}
            for fmt in FORMATS:
                if fmt not in row:
                    row[fmt] = measure_format(fmt, data, r.kernels, obs, d)
                    save(store)
                    print(f"{name} {point} {fmt}: {row[fmt]}", flush=True)


def load_teacher_artifact(cache: Path, name: str) -> bytes:
    from autocompress.teacher import load_teacher

    return load_teacher(next(cache.glob(f"{name}-*"))).artifact()


#: what produced the section: the package's compression and exports, and this script's measuring code
MEASURED_BY = (*SEARCH_CODE, "teachers", *(f"benchmarks/exports.py::{n}" for n in (
    "INT8", "POINTS", "FRONTS", "front_config", "FORMATS", "N_AGREE", "N_TIME", "measure_format", "run_spec",
    "load_teacher_artifact", "main")))


def render(store: dict) -> str:
    timed = [r for points in specs_of(store).values() for row in points.values() for f, r in row.items()
             if f in FORMATS and "calls" in r]
    calls = " / ".join(f"{n:,}" for n in sorted({r["calls"] for r in timed}))
    states = " / ".join(f"{n:,}" for n in sorted({r["observations"] for r in timed}))
    lines = [f"Per spec: the committed teacher, two fixed configs "
             "(int8 = 8-bit symmetric quantization; prune 90% + int8) and the config of a search front's best point "
             f"({FRONT_POINT}: the CartPole search on a Cortex-M0+ in `docs/data/mcu_search.json`, the MinAtar "
             "search's fewest-bytes point at >= 0.95 held-out in `docs/data/conv_search_minatar_breakout_ppo.json`), "
             "each run through `ac.compress` with `finetune: {iterations: 0}` (a recipe re-run, not the search's "
             "own artifact). Latency: batch 1, 1 thread, the "
             "format's own runtime called from Python (onnxruntime; LiteRT; ExecuTorch with XNNPACK; .acz: "
             f"autocompress's C runtime), interleaved with the .acz in the C runtime on the same {states} "
             f"teacher-visited states, median of {calls} calls each (`autocompress/exports/measure.py`, what "
             f"`autocompress export` prints). Agree: share of {N_AGREE:,} teacher-visited states where the format's "
             "action equals the .acz C runtime's, which runs each layer in the kernel the trial chose (int8 formats "
             f"round otherwise than those kernels: tflite-int8 fixes every activation's scale from {N_AGREE // 2} "
             "teacher-visited states, the runtime's int8 kernel scales each input per call; CartPole's teacher states "
             "hold many near-tied logits, hence its lower share there). C export: flash = text of "
             "policy.o built with its Makefile's flags, RAM = its bss; it has no timer of its own (main.c reads "
             "observations on stdin), and its kernels are the C runtime's, built with the same flags, so the "
             ".acz column stands for it. Arena: TensorFlow Lite Micro's allocator total on this 64-bit host (a "
             "32-bit MCU's is somewhat smaller), beside the C export's bss.", ""]
    for name, points in specs_of(store).items():
        lines += [f"### {name}", "", "| point | format | bytes | latency µs | .acz latency µs (same run) | agree | "
                  "RAM / arena B |", "|---|---|---|---|---|---|---|"]
        for point in [*POINTS, FRONT_POINT]:
            row = points.get(point, {})
            for fmt in FORMATS:
                r = row.get(fmt)
                if r is None:
                    continue
                if "skipped" in r:
                    lines.append(f"| {point} | {fmt} | n/a: {r['skipped'].split(' (')[0]} | | | | |")
                    continue
                lat = f"{r['latency_ms'] * 1e3:,.1f}" if "latency_ms" in r else "(no timer)"
                acz = f"{r['acz_latency_ms'] * 1e3:,.1f}" if "acz_latency_ms" in r else ""
                agree = (f"{r['agree']:.1%}" if "agree" in r else
                         f"max diff {r['max_abs_diff']:.2g}" if "max_abs_diff" in r else "")
                ram = r.get("arena_bytes", r.get("ram_bytes"))
                lines.append(f"| {point} | {fmt} | {r['bytes']:,} | {lat} | {acz} | {agree} | "
                             f"{'' if ram is None else f'{ram:,}'} |")
        lines.append("")
    return "\n".join(lines)


def specs_of(store: dict) -> dict:
    return {k: v for k, v in store.items() if k != "_meta"}


def sections() -> list[Section]:
    if not STORE.exists():
        return []
    return [Section("exports", "Export formats side by side: bytes, latency in their own runtimes, actions", "exports",
                    MEASURED_BY, render)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", nargs="+", default=["cartpole_ppo", "minatar_breakout_ppo"])
    args = ap.parse_args()
    store = load_store()
    with tempfile.TemporaryDirectory() as cache:  # a copy of the committed teachers: nothing written under teachers/
        cache = Path(cache)
        for name in args.specs:
            for t in (ROOT / "teachers").glob(f"{name}-*"):
                shutil.copytree(t, cache / t.name)
            run_spec(name, store, cache)
            record_meta(store, "exports", "python -m benchmarks.exports --specs " + " ".join(specs_of(store)),
                        MEASURED_BY)
            save(store)
    report.main([])


if __name__ == "__main__":
    main()
