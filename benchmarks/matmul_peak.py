"""This CPU's fp32 matmul peak at a given thread count: the yardstick for a training step's achieved FLOP/s.

    python benchmarks/matmul_peak.py [--threads 1]

Times ``torch.matmul`` on the shapes a Llama step multiplies (tokens x hidden by hidden x intermediate, its transpose,
hidden x hidden, the lm_head's hidden x vocabulary) and a large square one, best of several calls each; the peak is the
best of them. Counted as 2 x m x k x n FLOPs per product.
"""

from __future__ import annotations

import argparse
import time


def _rate(m: int, k: int, n: int, reps: int) -> float:
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best


def matmul_peak(threads: int, hidden: int = 576, intermediate: int = 1536, vocab: int = 49152, tokens: int = 512,
                square: int = 2048, reps: int = 5) -> dict:
    """``{"shapes": {description: FLOP/s}, "peak": best FLOP/s}`` at ``threads`` threads (SmolLM2-135M's shapes by
    default)."""
    import torch

    torch.set_num_threads(threads)
    shapes = {f"[{tokens} x {hidden}] @ [{hidden} x {intermediate}] (MLP up)": (tokens, hidden, intermediate),
              f"[{tokens} x {intermediate}] @ [{intermediate} x {hidden}] (MLP down)": (tokens, intermediate, hidden),
              f"[{tokens} x {hidden}] @ [{hidden} x {hidden}] (attention proj.)": (tokens, hidden, hidden),
              f"[{tokens} x {hidden}] @ [{hidden} x {vocab}] (lm_head)": (tokens, hidden, vocab),
              f"[{square} x {square}] @ [{square} x {square}]": (square, square, square)}
    rates = {name: _rate(*s, reps=reps) for name, s in shapes.items()}
    return {"shapes": rates, "peak": max(rates.values()), "threads": threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokens", type=int, default=512)
    args = p.parse_args()
    res = matmul_peak(args.threads, tokens=args.tokens)
    print(f"fp32 matmul, {args.threads} thread(s):")
    for name, rate in res["shapes"].items():
        print(f"  {name:52}{rate / 1e9:8.1f} GFLOP/s")
    print(f"  {'peak (best of the above)':52}{res['peak'] / 1e9:8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
