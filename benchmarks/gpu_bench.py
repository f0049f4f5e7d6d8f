"""Throughput of obliviate's unlearning step and audit passes on a 1B-class Llama built from a config (random init).

    PYTHONPATH=src python3 benchmarks/gpu_bench.py                     # on a CUDA machine (benchmarks/gpu.sh)
    PYTHONPATH=src python3 benchmarks/gpu_bench.py --device cpu --tiny # a few seconds: the same code on a tiny model

Measures, each after warm-up steps and with the device synchronised around the timed steps:

* the NPO unlearning step, the engine's step taken apart (``method.loss`` of NPO with cached reference log-probs and a
  retain NLL, under ``engine.loop.precision_context``; backward; clipping at 1.0; AdamW): ``--batch`` forget +
  ``--batch`` retain sequences of ``--seq`` tokens (the last 3/4 of each are answer tokens). Weights and AdamW state
  in fp32 (master weights), matmuls in bf16 by autocast: ``TrainConfig(precision="auto")`` on a GPU. With and without
  ``torch.compile`` (the model compiled, as ``TrainConfig(compile=True)`` does).
* the audit's teacher-forced log-prob pass (``logprobs.token_logprobs`` under no_grad, weights in bf16 as
  ``load_model`` gives them on a GPU) and greedy generation (``model.generate``, ``--new-tokens`` forced).

FLOPs per trained token: 6 x matmul parameters (lm_head included, embedding lookup not) + 12 x layers x seq x hidden
(attention scores and values, forward and backward, PaLM's convention); a forward-only pass counts a third of that.
MFU = achieved FLOP/s / the nominal dense bf16 peak (H200/H100 SXM: 989 TFLOP/s); the peak a bf16 matmul reaches on
the card is printed too. Prints one table; writes it as JSON to ``$OUT/gpu.json`` when ``$OUT`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # obliviate from this checkout, not installed

NOMINAL_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks, FLOP/s


def build_llama(tiny: bool, vocab: int, device):
    """A Llama from a config, random init, SDPA attention, fp32 weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    else:  # 1B class (Llama-3.2-1B's shape with a choice of vocabulary)
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                          tie_word_embeddings=True)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = 1, 2, 0
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a 1B model's init on a CPU takes long
        return LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)


def matmul_params(cfg) -> int:
    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = h * cfg.num_key_value_heads // cfg.num_attention_heads
    return n * (2 * h * h + 2 * h * kv + 3 * h * i) + h * cfg.vocab_size


def train_flops_per_token(cfg, seq: int) -> float:
    return 6 * matmul_params(cfg) + 12 * cfg.num_hidden_layers * seq * cfg.hidden_size


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup: int, reps: int) -> float:
    """Best seconds per call of ``fn`` over ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device, dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, device, 3, 10)


def qa_batch(cfg, batch: int, seq: int, device, seed: int) -> dict:
    """Random token sequences of ``seq`` tokens; the first quarter is the prompt (label -100), the rest the answer."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, cfg.vocab_size, (batch, seq), generator=g)
    labels = ids.clone()
    labels[:, :seq // 4] = -100
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device), "index": torch.arange(batch, device=device)}


def npo_step_time(model, args, device, compile_: bool) -> float:
    """Seconds per NPO step (forget + retain batch, backward, clip, AdamW), the engine's step taken apart."""
    from obliviate.engine.loop import precision_context
    from obliviate.engine.reference import Reference
    from obliviate.logprobs import forward_logits, sequence_logprob
    from obliviate.methods import make_method

    method = make_method("NPO")
    forget = qa_batch(model.config, args.batch, args.seq, device, 0)
    retain = qa_batch(model.config, args.batch, args.seq, device, 1)
    ref = Reference("none")
    with torch.no_grad(), precision_context(args.precision, device):  # the cache the engine fills before step 1
        ref.cache = {"forget": sequence_logprob(forward_logits(model, forget), forget["labels"])[0].float()}
    model.train()
    stepped = torch.compile(model) if compile_ else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step():
        with precision_context(args.precision, device):
            loss, _ = method.loss(stepped, {"forget": forget, "retain": retain}, ref)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, device, args.warmup + (2 if compile_ else 0), args.steps)
    optimizer.state.clear()  # the next measurement starts without this one's AdamW state on the device
    return seconds


def logprob_time(model, args, device) -> float:
    from obliviate.logprobs import forward_logits, token_logprobs

    batch = qa_batch(model.config, args.audit_batch, args.seq, device, 2)

    @torch.no_grad()
    def run():
        token_logprobs(forward_logits(model, batch), batch["labels"])

    return timed(run, device, 1, 3)


def generate_time(model, args, device) -> float:
    prompts = qa_batch(model.config, args.audit_batch, args.prompt_len, device, 3)

    @torch.no_grad()
    def run():
        model.generate(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"], do_sample=False,
                       max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)

    return timed(run, device, 1, 2)


HEAVY = {"rouge_score", "datasets", "gguf", "nltk", "peft"}  # modules this script must not need (absent on the GPU box)


def save(result: dict) -> None:
    """``$OUT/gpu.json``, rewritten after each measurement (atomically), when ``$OUT`` is set."""
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu.json"
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny Llama and small batches: a seconds-long check")
    p.add_argument("--vocab", type=int, default=128256, help="vocabulary of the 1B model (32000 or 128256)")
    p.add_argument("--batch", type=int, default=8, help="forget sequences per step (as many retain ones)")
    p.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--compile", choices=("both", "off", "on"), default=None,
                   help="torch.compile runs (default: both on a GPU, off on a CPU, where compiling takes minutes)")
    p.add_argument("--audit-batch", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    args = p.parse_args()
    device = torch.device(args.device)
    if args.tiny:
        args.batch, args.seq, args.steps, args.warmup = 2, 32, 2, 1
        args.audit_batch, args.prompt_len, args.new_tokens = 4, 8, 8
    compile_modes = {"both": [False, True], "on": [True], "off": [False]}[
        args.compile or ("both" if device.type == "cuda" else "off")]
    from obliviate.engine.loop import resolved_precision

    precision = resolved_precision(args.precision, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    nominal = next((v for k, v in NOMINAL_BF16.items() if k in name), None) if precision == "bf16" else None
    peak_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peak = matmul_peak(device, peak_dtype, 256 if args.tiny else 8192)

    model = build_llama(args.tiny, args.vocab, device)
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    print(f"device: {name}; torch {torch.__version__}; model: Llama, {params / 1e9:.2f} B parameters (hidden "
          f"{cfg.hidden_size}, {cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads / "
          f"{cfg.num_key_value_heads} KV, vocab {cfg.vocab_size}), SDPA attention")
    print(f"step: {args.batch} forget + {args.batch} retain x {args.seq} tokens, {precision} "
          f"({'autocast, fp32 master weights and AdamW state' if precision == 'bf16' else 'fp32'}); audit passes "
          f"in {'bf16' if device.type == 'cuda' else 'fp32'} weights, batch {args.audit_batch}")
    print(f"measured {peak_dtype} matmul peak: {peak / 1e12:.1f} TFLOP/s"
          + (f"; nominal dense bf16 peak {nominal / 1e12:.0f} TFLOP/s" if nominal else ""))
    print(f"\n{'':34}{'s/call':>9}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}{'of matmul':>11}", flush=True)
    rows = []

    def row(what: str, seconds: float, tokens: int, flops: float, **extra) -> None:
        """One line of the table, printed as soon as it is measured (a timeout keeps what came before)."""
        r = {"what": what, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
             "tflops": flops / seconds / 1e12, **extra}
        r["mfu_nominal"] = r["tflops"] * 1e12 / nominal if nominal else None
        r["of_matmul_peak"] = r["tflops"] * 1e12 / peak
        rows.append(r)
        save({"device": name, "torch": torch.__version__, "params": params, "precision": precision,
              "matmul_peak_tflops": peak / 1e12, "nominal_tflops": nominal / 1e12 if nominal else None,
              "batch": args.batch, "seq": args.seq, "rows": rows,
              "modules": sorted({m.split(".")[0] for m in sys.modules} & HEAVY)})
        mfu = f"{100 * r['mfu_nominal']:6.1f}%" if r["mfu_nominal"] else "     -"
        print(f"{what:34}{seconds:>9.4f}{r['tokens_per_s']:>11.0f}{r['tflops']:>9.2f}{mfu:>7}"
              f"{100 * r['of_matmul_peak']:>10.1f}%", flush=True)

    tokens = 2 * args.batch * args.seq
    for compile_ in compile_modes:
        t0 = time.perf_counter()
        s = npo_step_time(model, args, device, compile_)
        row(f"NPO step ({precision}, {'compiled' if compile_ else 'eager'})", s, tokens,
            train_flops_per_token(cfg, args.seq) * tokens, wall_incl_warmup_s=time.perf_counter() - t0)
    model.to(torch.bfloat16 if device.type == "cuda" else torch.float32).eval()  # as load_model gives it on a GPU
    n = args.audit_batch * args.seq
    row("log-prob pass (no_grad)", logprob_time(model, args, device), n, train_flops_per_token(cfg, args.seq) / 3 * n)
    n = args.audit_batch * args.new_tokens
    row("greedy generation", generate_time(model, args, device), n, 2 * matmul_params(cfg) * n)
    if os.environ.get("OUT"):
        print(f"\nwrote {Path(os.environ['OUT']) / 'gpu.json'}")


if __name__ == "__main__":
    main()
