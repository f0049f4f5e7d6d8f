"""The unlearning step of NPO (8 forget + 8 retain items of TOFU forget10), timed against a baseline commit, profiled,
and counted in FLOP/s against this CPU's measured matmul peak.

    python benchmarks/step_speed.py                      # tiny Llama: HEAD vs 7326d71, interleaved, ratio
    python benchmarks/step_speed.py --profile            # where HEAD's step spends its time (torch.profiler)
    python benchmarks/step_speed.py --flops              # SmolLM2-135M: achieved FLOP/s / matmul peak, by batch shape
    python benchmarks/step_speed.py --flops --tiny       # the same for the tiny Llama

Each measurement runs the engine's real training loop (``engine.train``: batching, method loss, backward, clipping,
AdamW, logging) in a fresh subprocess with a fixed thread count, on the same saved model and the same data and seed, and
reads the per-step wall time from ``metrics.jsonl``'s ``elapsed_s``: the one-off work before the first step (encoding,
the reference log-probs of the forget set) is left out, and so are the first ``--warmup`` steps. Base and HEAD runs
alternate, and each side's minimum over rounds is compared (other work on the machine only ever adds time). The loss
of every step is printed for both sides: they must be equal (the step is faster, not different).

The baseline is a git worktree of the commit: ``git worktree add /tmp/base7326s 7326d71``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOFU = Path(os.environ.get("OBLIVIATE_SHARED_DATA", REPO.parent / "shared" / "data")) / "tofu"


# ---------------------------------------------------------------------------------------------------------- worker


def _worker(args) -> None:
    """One measurement in this process: obliviate imported from ``args.src``, printed as one JSON line."""
    sys.path.insert(0, str(Path(args.src) / "src"))
    import torch

    torch.set_num_threads(args.threads)
    from obliviate.config import TrainConfig
    from obliviate.data import load_benchmark
    from obliviate.engine import train
    from obliviate.methods import make_method
    from obliviate.models import load_model

    bench = load_benchmark(TOFU, args.split)
    model, tok = load_model(args.model_dir, dtype="float32", device="cpu")
    forget = bench.forget[:args.items] if args.items else bench.forget
    retain = bench.retain[:args.items] if args.items else bench.retain
    cfg = TrainConfig(lr=1e-5, max_steps=args.warmup + args.steps, batch_size=args.batch, scheduler="constant",
                      max_length=args.max_length, save_every=0, seed=0)
    with tempfile.TemporaryDirectory() as run:
        t0 = time.perf_counter()
        train(model, tok, make_method("NPO"), {"forget": forget, "retain": retain}, cfg, run, progress=False)
        total = time.perf_counter() - t0
        rows = [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines() if line.strip()]
    elapsed = [0.0] + [r["elapsed_s"] for r in rows]
    steps = [b - a for a, b in zip(elapsed, elapsed[1:])][args.warmup:]
    print(json.dumps({"src": args.src, "step_s": steps, "loss": [r["loss"] for r in rows], "total_s": total,
                      "threads": torch.get_num_threads()}))


def run_worker(src: Path, model_dir: Path, args, **over) -> dict:
    """A fresh interpreter measuring ``src``'s step; OMP/MKL/obliviate threads pinned to ``args.threads``."""
    opts = {"split": args.split, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
            "threads": args.threads, "items": args.items, "max_length": args.max_length, **over}
    cmd = [sys.executable, __file__, "--worker", "--src", str(src), "--model-dir", str(model_dir)]
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": str(opts["threads"]), "MKL_NUM_THREADS": str(opts["threads"]),
           "OBLIVIATE_THREADS": str(opts["threads"]), "TOKENIZERS_PARALLELISM": "false",
           "OBLIVIATE_CACHE": os.environ.get("OBLIVIATE_CACHE", str(Path.home() / ".cache" / "obliviate"))}
    env.pop("PYTHONPATH", None)  # the worker puts the commit's own src first
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(src))
    if out.returncode != 0:
        sys.exit(f"worker for {src} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiny_model_dir(where: Path) -> Path:
    """The tiny Llama the issue timed (``TinyConfig()``, tokenizer trained on TOFU forget10's texts), saved once."""
    sys.path.insert(0, str(REPO / "src"))
    from obliviate.data import load_benchmark
    from obliviate.models import TinyConfig, save_model, tiny_from_texts
    from obliviate.pipeline import benchmark_texts

    model, tok = tiny_from_texts(benchmark_texts(load_benchmark(TOFU, "forget10")), TinyConfig())
    return save_model(model, tok, where / "tiny")


# ------------------------------------------------------------------------------------------------------ comparison


def compare(args) -> None:
    base = Path(args.base)
    if not (base / "src" / "obliviate").is_dir():
        sys.exit(f"{base}: no baseline checkout (git worktree add {base} 7326d71)")
    with tempfile.TemporaryDirectory() as d:
        model_dir = tiny_model_dir(Path(d))
        runs: dict[str, list[dict]] = {"base": [], "head": []}
        for r in range(args.rounds):
            for side, src in (("base", base), ("head", REPO)) if r % 2 == 0 else (("head", REPO), ("base", base)):
                runs[side].append(run_worker(src, model_dir, args))
                s = runs[side][-1]["step_s"]
                print(f"round {r + 1} {side}: step min {min(s):.3f} s, median {statistics.median(s):.3f} s",
                      flush=True)
    best = {side: min(min(x["step_s"]) for x in v) for side, v in runs.items()}
    med = {side: min(statistics.median(x["step_s"]) for x in v) for side, v in runs.items()}
    lb, lh = runs["base"][0]["loss"], runs["head"][0]["loss"]
    diff = max(abs(a - b) for a, b in zip(lb, lh))
    print(f"\nNPO step, tiny Llama ({args.batch} forget + {args.batch} retain, TOFU {args.split}), "
          f"{args.threads} thread(s), {args.steps} timed steps x {args.rounds} rounds, `uptime`: {_load()}")
    print(f"{'':24}{'min step':>10}{'best median':>13}")
    print(f"{'7326d71 (' + str(base) + ')':24}"[:24] + f"{best['base']:>9.3f}s{med['base']:>12.3f}s")
    print(f"{'HEAD':24}{best['head']:>9.3f}s{med['head']:>12.3f}s")
    print(f"speed-up (base / HEAD): x{best['base'] / best['head']:.2f} at the minimum, "
          f"x{med['base'] / med['head']:.2f} at the median")
    print(f"loss per step, base vs HEAD: max |difference| {diff:.2e} over {len(lb)} steps "
          f"({'equal' if diff <= 1e-6 else 'DIFFERENT'} to 1e-6; metrics.jsonl rounds to 6 decimals)")


def _load() -> str:
    return open("/proc/loadavg").read().split()[0] + " (1-min load)" if Path("/proc/loadavg").exists() else "?"


# --------------------------------------------------------------------------------------------------------- profile


class StepParts:
    """The engine's NPO step taken apart so that each part can carry a profiler label: the same calls, in the same
    order, as ``engine.train`` with ``NPO`` (batches from the same seeded schedule, the cached reference log-probs,
    AdamW, clipping at 1.0)."""

    labels = ("batching", "forget forward", "forget log-probs + NPO", "retain forward", "retain NLL", "backward",
              "clip grad norm", "optimizer step + zero_grad")

    def __init__(self, model, tok, data: dict, cfg):
        import torch

        from obliviate.data.collate import PromptFormat
        from obliviate.engine.loop import _encode_all
        from obliviate.engine.pairing import Schedule
        from obliviate.engine.reference import Reference

        self.model, self.cfg, self.pad = model, cfg, tok.pad_token_id
        self.enc = _encode_all(PromptFormat(tok, cfg.max_length), data)
        self.ref = Reference("logprobs", model, self.enc, self.pad, batch_size=max(cfg.batch_size, 16))
        self.schedule = Schedule(cfg.pairing, len(self.enc["forget"]), len(self.enc["retain"]), cfg.seed)
        model.train()
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)

    def _batch(self, name: str, idx) -> dict:
        import torch

        from obliviate.data.collate import pad_batch

        b = pad_batch([self.enc[name][i] for i in idx], self.pad)
        b["index"] = torch.as_tensor(idx, dtype=torch.long)
        return b

    def step(self, i: int, label=None) -> float:
        import contextlib

        import torch

        from obliviate.logprobs import forward_logits, nll_mean, sequence_logprob
        from obliviate.methods.losses import npo_loss

        label = label or (lambda _: contextlib.nullcontext())
        with label("batching"):
            _, idx, ridx = self.schedule.micro_batch(i, self.cfg.batch_size)
            f, r = self._batch("forget", idx), self._batch("retain", ridx)
        with label("forget forward"):
            logits = forward_logits(self.model, f)
        with label("forget log-probs + NPO"):
            logp, _ = sequence_logprob(logits, f["labels"])
            forget = npo_loss(logp, self.ref.sequence_logprob("forget", f), 0.1)
        with label("retain forward"):
            retain_logits = forward_logits(self.model, r)
        with label("retain NLL"):
            loss = forget + nll_mean(retain_logits, r["labels"])
            value = loss.item()
        with label("backward"):
            loss.backward()
        with label("clip grad norm"):
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        with label("optimizer step + zero_grad"):
            self.optimizer.step()
            self.optimizer.zero_grad()
        return value


def profile(args) -> None:
    """HEAD's step, profiled part by part (``StepParts``) and operator by operator."""
    sys.path.insert(0, str(REPO / "src"))
    import torch
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(args.threads)
    from obliviate.config import TrainConfig
    from obliviate.data import load_benchmark
    from obliviate.models import load_model

    bench = load_benchmark(TOFU, args.split)
    with tempfile.TemporaryDirectory() as d:
        model_dir = Path(args.model_dir) if args.model_dir else tiny_model_dir(Path(d))
        model, tok = load_model(model_dir, dtype="float32", device="cpu")
    n = args.items or None
    cfg = TrainConfig(lr=1e-5, batch_size=args.batch, max_length=args.max_length)
    parts = StepParts(model, tok, {"forget": bench.forget[:n], "retain": bench.retain[:n]}, cfg)
    for i in range(args.warmup):
        parts.step(i)
    t0 = time.perf_counter()
    for i in range(args.steps):  # unprofiled: the wall time the profiler's own overhead does not inflate
        parts.step(args.warmup + i)
    wall = (time.perf_counter() - t0) / args.steps
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(args.steps):
            parts.step(args.warmup + args.steps + i, record_function)
    events = prof.key_averages()
    by_name = {e.key: e for e in events}
    prof_wall = sum(by_name[k].cpu_time_total for k in parts.labels if k in by_name) / 1e6 / args.steps
    print(f"HEAD NPO step, {args.batch} + {args.batch} items of TOFU {args.split}, {args.threads} thread(s): "
          f"{wall:.3f} s per step unprofiled, {prof_wall:.3f} s profiled; `uptime`: {_load()}")
    print("\nparts of the step (per step, share of the profiled step):")
    for label in parts.labels:
        if label in by_name:
            t = by_name[label].cpu_time_total / 1e6 / args.steps
            print(f"  {label:30}{t:8.4f} s {100 * t / prof_wall:5.1f}%")
    print("\noperators by own time (per step, share of the profiled step, calls per step):")
    ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:args.top]
    for e in ops:
        t = e.self_cpu_time_total / 1e6 / args.steps
        print(f"  {e.key:52}{t:8.4f} s {100 * t / prof_wall:5.1f}%  x{e.count // args.steps}")


# ----------------------------------------------------------------------------------------------------------- FLOPs


def flops(args) -> None:
    """SmolLM2-135M's NPO step in FLOP/s against the matmul peak, for a few batch shapes."""
    sys.path.insert(0, str(HERE))
    from matmul_peak import matmul_peak

    sys.path.insert(0, str(REPO / "src"))
    from obliviate.models.smollm2 import ensure_converted

    tmp = tempfile.TemporaryDirectory()
    model_dir = tiny_model_dir(Path(tmp.name)) if args.tiny else ensure_converted()
    model_name = "tiny Llama" if args.tiny else "SmolLM2-135M"
    args.items = args.items or 64  # the reference log-probs are computed for these forget items before step 1
    cfg = json.loads((model_dir / "config.json").read_text())
    peak = matmul_peak(args.threads, hidden=cfg["hidden_size"], intermediate=cfg["intermediate_size"],
                       vocab=cfg["vocab_size"], tokens=512)
    print(f"fp32 matmul, {args.threads} thread(s), `uptime` {_load()}:")
    for name, v in peak["shapes"].items():
        print(f"  {name:52}{v / 1e9:8.1f} GFLOP/s")
    print(f"  {'peak (best of the above)':52}{peak['peak'] / 1e9:8.1f} GFLOP/s")
    print(f"\n{model_name} NPO step (engine.train, AdamW, fp32, {args.threads} thread(s), first {args.items or 'all'} "
          f"forget and retain items of TOFU {args.split}); FLOPs = {FLOP_FORMULA}")
    print(f"{'batch':>6}{'max_len':>8}{'padded tokens':>14}{'answer share':>13}{'s/step':>8}{'GFLOP/step':>11}"
          f"{'GFLOP/s':>9}{'of peak':>9}")
    for shape in args.shapes.split(","):
        batch, max_length = (int(x) for x in shape.split("x"))
        res = run_worker(REPO, model_dir, args, batch=batch, max_length=max_length, steps=args.flop_steps, warmup=1)
        shapes = step_shapes(model_dir, args.split, args.items, batch, max_length, 1, args.flop_steps)
        per_step = [step_flops(cfg, sh) for sh in shapes]
        rate = max(f / t for f, t in zip(per_step, res["step_s"]))  # each step's own FLOPs over its own time
        tokens = sum(b * t for sh in shapes for b, t in sh["batches"]) / len(shapes)
        answer = sum(sh["answer"] for sh in shapes) / sum(b * t for sh in shapes for b, t in sh["batches"])
        print(f"{batch:>6}{max_length:>8}{tokens:>14.0f}{100 * answer:>12.0f}%{min(res['step_s']):>8.2f}"
              f"{sum(per_step) / len(per_step) / 1e9:>11.0f}{rate / 1e9:>9.1f}{100 * rate / peak['peak']:>8.1f}%",
              flush=True)
    tmp.cleanup()


FLOP_FORMULA = ("6 x matmul parameters x padded tokens (forward + backward of the trained model; lm_head counted, "
                "embedding lookup not) + 12 x layers x padded tokens x padded length x hidden (attention scores and "
                "values, forward + backward, the full square as SDPA computes it); no reference forward: NPO's "
                "reference log-probs are cached before the first step")


def step_flops(cfg: dict, shape: dict) -> float:
    """FLOPs of one NPO step by FLOP_FORMULA, from a Llama config and the step's padded (batch, length) shapes."""
    h, i, v, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    kv = h * cfg.get("num_key_value_heads", cfg["num_attention_heads"]) // cfg["num_attention_heads"]
    matmul_params = n * (2 * h * h + 2 * h * kv + 3 * h * i) + h * v
    return sum(6 * matmul_params * b * t + 12 * n * b * t * t * h for b, t in shape["batches"])


def step_shapes(model_dir: Path, split: str, items: int, batch: int, max_length: int, first: int, steps: int):
    """The padded (batch, length) shapes of the forget and retain micro-batches of steps ``first`` ... (the engine's
    seeded schedule, seed 0, one process), and their answer-token counts."""
    from obliviate.data import PromptFormat, load_benchmark
    from obliviate.engine.pairing import Schedule
    from obliviate.models import load_model

    bench = load_benchmark(TOFU, split)
    n = items or None
    forget, retain = bench.forget[:n], bench.retain[:n]
    _, tok = load_model(model_dir, dtype="float32", device="cpu")
    fmt = PromptFormat(tok, max_length)
    sched = Schedule("random", len(forget), len(retain), 0)
    out = []
    for micro in range(first, first + steps):
        _, idx, ridx = sched.micro_batch(micro, batch)
        encs = [[fmt.encode(its[j].question, its[j].answer) for j in ix] for its, ix in ((forget, idx), (retain, ridx))]
        out.append({"batches": [(len(e), max(len(x.input_ids) for x in e)) for e in encs],
                    "answer": sum(sum(1 for t in x.labels if t != -100) for e in encs for x in e)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="/tmp/base7326s", help="checkout of the baseline commit (git worktree)")
    p.add_argument("--rounds", type=int, default=4, help="alternating base/HEAD rounds")
    p.add_argument("--steps", type=int, default=15, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--batch", type=int, default=8, help="forget items per step (and as many retain items)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--split", default="forget10")
    p.add_argument("--items", type=int, default=0, help="use only the first N forget and retain items (0 = all)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--profile", action="store_true", help="profile HEAD's step instead of comparing")
    p.add_argument("--top", type=int, default=15, help="operators listed by --profile")
    p.add_argument("--flops", action="store_true", help="SmolLM2-135M FLOP/s against the matmul peak")
    p.add_argument("--shapes", default="8x256,16x256", help="--flops: batch x max_length, comma-separated")
    p.add_argument("--flop-steps", type=int, default=3, help="--flops: timed steps per shape")
    p.add_argument("--tiny", action="store_true", help="--flops: the tiny Llama instead of SmolLM2-135M")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help="a saved model folder instead of the tiny Llama (for --profile)")
    args = p.parse_args()
    if args.worker:
        _worker(args)
    elif args.profile:
        profile(args)
    elif args.flops:
        flops(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
