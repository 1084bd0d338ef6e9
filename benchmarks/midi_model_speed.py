"""Generation speed of the midi-model (SkyTNT-compatible, `models.midi_model`) on CPU: eager PyTorch
fp32 vs onnxruntime fp32 vs onnxruntime dynamic INT8, all measured in the same run.

What is timed: one 16-bar monophonic melody through the generator's own loop
(`generation.midi_model.generate_tokens`): the meta primer (bos, time and key signature, tempo, the
lead's patch), then exactly `--events` (128) note events, each = 8 token steps (event type + 7 note
parameters), with KV caches (the event cache persists across events, the token cache is fresh per
event). Only note events, no eos, greedy inside each slot's mask (temperature 0), so every run costs
the same and backends can be compared token by token. Weights are random (fixed seed) at `--size` (default the
FULL medium size: net 12 x 1024, net_token 3 x 1024, vocab 3,406, 233.8 M parameters).

Backends (each in its own subprocess, so its peak RSS is clean; torch threads = ORT intra-op
threads = `--threads` (2)):

- `eager_fp32`: `midi_model.TorchStepper` (transformers LlamaModel + DynamicCache), full logits,
  mask applied in numpy — the baseline (upstream's loop).
- `eager_fp32_rows`: the same with the row restriction the ONNX backends use (like for like).
- `onnx_fp32`: `midi_model_onnx.OnnxStepper` on the fp32 export, logits only for the rows the
  slot's mask allows (`rows=` a slice of the vocabulary; identical to the full logits on those rows).
- `onnx_int8`: the same on the `quantize_int8` export (MatMul weights int8, u8 x s8 VNNI kernels).
- `onnx_int8_full_logits`: INT8 with full logits (rows=None), to show what the row restriction buys.

Per backend: 1 warm-up generation of 8 events, then `--runs` timed generations (median reported;
`--eager-runs` may be lower for the slow eager baseline). Also recorded: export / quantisation
time, file sizes, fp32 parity (max abs diff vs transformers), whether the fp32 tokens equal the
eager tokens, INT8 token agreement with fp32 and teacher-forced top-1 agreement (fp32 vs INT8) on
held-out rule-engine melodies tokenized with `MidiTokenizer.melody_to_tokens`.

Run: `.venv/bin/python benchmarks/midi_model_speed.py` (writes benchmarks/results/midi_model_speed.json);
smoke run: `--size tiny --runs 1`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "midi_model_speed.json"
BACKENDS = ("eager_fp32", "eager_fp32_rows", "onnx_fp32", "onnx_int8", "onnx_int8_full_logits")
KEYS = ["Am", "Em", "Dm", "Cm", "Gm", "F#m", "Bm", "C", "G", "F"]


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process since its exec (Linux VmHWM; getrusage's ru_maxrss
    would carry the parent's peak across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class FullLogits:
    """A stepper seen without `supports_rows`: the generation loop asks for the full logits (every
    row of lm_head), as upstream's loop does."""

    def __init__(self, stepper):
        self.s = stepper
        self.hidden_size, self.vocab_size = stepper.hidden_size, stepper.vocab_size

    def start(self, batch):
        self.s.start(batch)

    def net_step(self, x):
        return self.s.net_step(x)

    def token_start(self, hidden):
        return self.s.token_start(hidden)

    def token_next(self, ids):
        return self.s.token_next(ids)


def generate(stepper, tokenizer, events: int, restrict_rows: bool) -> np.ndarray:
    """One melody through the project's generation loop (`generation.midi_model.generate_tokens`):
    the meta primer (bos, 4/4, A minor, 140 BPM, lead patch), then exactly `events` note events (eos
    not allowed, greedy inside each slot's mask so backends compare token by token). Returns the
    generated [events, 8] rows."""
    from trance_assets.generation import midi_model as gm

    primer = gm.build_primer(tokenizer, key="Am", bpm=140, chords=(), bars=16, mode="meta")
    rows = gm.generate_tokens(stepper if restrict_rows else FullLogits(stepper), tokenizer, primer, max_events=events,
                              temperature=0, allowed_events=("note",), allow_eos=False, rng=np.random.default_rng(0))
    return rows[len(primer.rows):]


# ------------------------------------------------------------------------------------ child
def child(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from trance_assets.models.midi_model import MidiModel, TorchStepper
    from trance_assets.models.midi_model_onnx import OnnxStepper

    work = Path(args.workdir)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    if args.child.startswith("eager_fp32"):
        model = MidiModel.from_pretrained(work / "checkpoint")
        stepper, restrict = TorchStepper(model), args.child == "eager_fp32_rows"
    else:
        folder = work / ("onnx_fp32" if args.child == "onnx_fp32" else "onnx_int8")
        stepper, restrict = OnnxStepper(folder, threads=args.threads), args.child != "onnx_int8_full_logits"
    tok = stepper_tokenizer(work)
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mb()
    generate(stepper, tok, min(8, args.events), restrict)  # warm-up
    runs = args.eager_runs if args.child.startswith("eager_fp32") else args.runs
    seconds, others, tokens = [], [], None
    for _ in range(runs):
        busy0, own0 = system_busy_seconds(), own_cpu_seconds()
        t = time.perf_counter()
        tokens = generate(stepper, tok, args.events, restrict)
        dt = time.perf_counter() - t
        seconds.append(dt)
        # CPU seconds other processes used per wall second during this run (0 = a quiet machine)
        others.append(max(0.0, (system_busy_seconds() - busy0) - (own_cpu_seconds() - own0)) / dt)
    np.save(work / f"tokens_{args.child}.npy", tokens)
    return {"backend": args.child, "runs": runs, "seconds_each": [round(s, 3) for s in seconds],
            "seconds_median": round(statistics.median(seconds), 3), "seconds_min": round(min(seconds), 3),
            "ms_per_event": round(1000 * statistics.median(seconds) / args.events, 2),
            "load_seconds": round(load_s, 2), "rss_mb_start": round(rss0, 1), "rss_mb_after_load": round(rss_loaded, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "restricted_rows": restrict,
            "other_processes_cpu_cores_each": [round(o, 2) for o in others]}


def system_busy_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def stepper_tokenizer(work: Path):
    from trance_assets.formats.midi_tokenizer import MidiTokenizer

    cfg = json.loads((work / "checkpoint" / "config.json").read_text())
    return MidiTokenizer.from_config(cfg["tokenizer"])


# ------------------------------------------------------------------------------------ parent
def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def held_out_sequences(tokenizer, n: int, bars: int = 16) -> list[np.ndarray]:
    from trance_assets.music.rules import generate as rules_generate

    return [np.asarray(tokenizer.melody_to_tokens(rules_generate(key=KEYS[i % len(KEYS)], bpm=138, bars=bars, seed=5000 + i)))
            for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="medium", choices=["tiny", "small", "medium", "large"])
    ap.add_argument("--events", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--eager-runs", type=int, default=None, help="timed runs of the eager baseline (default --runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=int, default=8, help="rule-engine melodies for the top-1 agreement")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, choices=BACKENDS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.eager_runs is None:
        args.eager_runs = args.runs
    if args.child:
        print(json.dumps(child(args)))
        return

    import onnx
    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    from trance_assets.models import midi_model_onnx as mo
    from trance_assets.models.midi_model import MidiModel, MidiModelConfig

    load_before = load_average()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="midi_model_speed_"))
    try:
        torch.manual_seed(args.seed)
        model = MidiModel(MidiModelConfig.from_size(args.size)).eval()
        model.save_pretrained(work / "checkpoint")
        t = time.perf_counter()
        export = mo.export_onnx(model, work / "onnx_fp32")
        export_s = time.perf_counter() - t
        parity = mo.parity(model, work / "onnx_fp32", threads=args.threads)
        quant = mo.quantize_int8(work / "onnx_fp32", work / "onnx_int8")
        tok = model.tokenizer
        n_params = model.n_params
        del model

        results = {}
        for b in args.backends.split(","):
            cmd = [sys.executable, __file__, "--child", b, "--workdir", str(work), "--size", args.size, "--events", str(args.events),
                   "--runs", str(args.runs), "--eager-runs", str(args.eager_runs), "--threads", str(args.threads)]
            print(f"[{b}] load {load_average()}", file=sys.stderr, flush=True)
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
            if p.returncode != 0:
                raise RuntimeError(f"{b} failed:\n{p.stderr[-4000:]}")
            results[b] = json.loads(p.stdout.strip().splitlines()[-1])
            print(f"[{b}] {results[b]['seconds_median']} s ({results[b]['seconds_each']})", file=sys.stderr, flush=True)

        tokens = {b: np.load(work / f"tokens_{b}.npy") for b in results}
        base = results.get("eager_fp32")
        for b, r in results.items():
            if base and b != "eager_fp32":
                r["speedup_over_eager_fp32"] = round(base["seconds_median"] / r["seconds_median"], 2)
                r["speedup_over_eager_fp32_min_vs_min"] = round(base["seconds_min"] / r["seconds_min"], 2)
        comparisons = {}
        if "eager_fp32" in tokens and "onnx_fp32" in tokens:
            comparisons["onnx_fp32_tokens_equal_eager"] = bool(np.array_equal(tokens["eager_fp32"], tokens["onnx_fp32"]))
        if "onnx_fp32" in tokens and "onnx_int8" in tokens:
            comparisons["onnx_int8_token_agreement_with_fp32_free_running"] = round(float((tokens["onnx_fp32"] == tokens["onnx_int8"]).mean()), 4)
        if "onnx_int8" in tokens and "onnx_int8_full_logits" in tokens:
            comparisons["onnx_int8_rows_tokens_equal_full_logits"] = bool(np.array_equal(tokens["onnx_int8"], tokens["onnx_int8_full_logits"]))
        t = time.perf_counter()
        seqs = held_out_sequences(tok, args.held_out)
        agreement = mo.top1_agreement(work / "onnx_fp32", work / "onnx_int8", seqs, threads=args.threads)
        agreement["seconds"] = round(time.perf_counter() - t, 2)
        agreement["data"] = f"{args.held_out} rule-engine melodies (16 bars, 138 BPM, seeds 5000..), MidiTokenizer.melody_to_tokens; random weights"

        int8 = results.get("onnx_int8", {})
        out = {
            "machine": {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                        "onnxruntime": ort.__version__, "cpus": os.cpu_count(), "cpu": cpu_model(), "threads": args.threads,
                        "platform": platform.platform(), "load_average_before": load_before, "load_average_after": load_average()},
            "method": {
                "task": f"generation.midi_model.generate_tokens: the meta primer, then {args.events} note events x 8 token steps "
                        "(event type + 7 parameters), batch 1, KV caches; only note events, no eos, greedy inside each slot's mask",
                "weights": f"random init, torch.manual_seed({args.seed})",
                "timing": "wall clock of one whole generation; 1 warm-up generation of 8 events, then the median of the timed runs",
                "quietness": "other_processes_cpu_cores_each = CPU seconds used by other processes per wall second during each run "
                             "(system busy time minus this process's); ~0 means the 2 cores were ours",
                "processes": "each backend in its own subprocess (clean peak RSS: /proc/self/status VmHWM)",
                "baseline": "eager_fp32 = midi_model.TorchStepper (transformers LlamaModel + DynamicCache, full logits), same run",
                "threads": f"torch.set_num_threads({args.threads}); onnxruntime intra_op_num_threads={args.threads}",
            },
            "model": {"size": args.size, "params": n_params, "net": export["model"]["net"], "net_token": export["model"]["net_token"],
                      "hidden": export["model"]["hidden"], "vocab": export["model"]["vocab"]},
            "export": {"opset": export["opset"], "seconds": round(export_s, 2), "file_bytes_fp32": export["file_bytes"],
                       "file_mb_fp32_total": round(sum(export["file_bytes"].values()) / 2**20, 1),
                       "file_bytes_int8": quant["file_bytes_after"], "file_mb_int8_total": round(quant["total_bytes_after"] / 2**20, 1),
                       "int8_size_ratio": quant["ratio"], "quantize_seconds": quant["quantize_seconds"],
                       "quantization": quant["quantization"], "parity_fp32_vs_torch": parity},
            "notes": ["MIDI-MODEL-FACTS.md quotes 26.0 s for eager fp32 on this kind of machine; the ratio that counts is the "
                      "one against eager measured in this run (other_processes_cpu_cores_each flags runs shared with other "
                      "workers' processes on the 2 cores).",
                      "ONNX backends compute logits only for the rows the slot allows (onnx_int8_full_logits shows the cost of "
                      "the full lm_head); onnxruntime intra-op spinning is off (two sessions alternate on 2 cores)."],
            "results": results,
            "comparisons": comparisons,
            "top1_agreement_fp32_vs_int8_teacher_forced": agreement,
            "targets": {"int8_speedup_min": 5.0, "int8_speedup_goal": 10.0,
                        "int8_speedup": results.get("onnx_int8", {}).get("speedup_over_eager_fp32"),
                        "int8_seconds": int8.get("seconds_median")},
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({"results": {b: (r["seconds_median"], r.get("speedup_over_eager_fp32"), r["peak_rss_mb"]) for b, r in results.items()},
                          "comparisons": comparisons, "top1": agreement["top1_agreement"]}, indent=1))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
