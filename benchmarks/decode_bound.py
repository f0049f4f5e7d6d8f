"""What bounds the audit's greedy decoding on the tiny model (issue 19): attention over a KV cache that does not fit
the CPU's last-level cache.

    python benchmarks/decode_bound.py [--batch 32] [--length 160] [--capacity 260] [--threads 1]

One decoding step's attention of the tiny Llama of ``benchmarks/audit_speed.py`` (4 layers, 4 heads of 48, batch 32,
one query row against ``--length`` cached positions of buffers of ``--capacity``, as
``scoring.passes.preallocated_cache`` holds them) timed two ways with ``scaled_dot_product_attention``: the same
layer's cache again and again (it stays in the CPU's caches), and the four layers' caches in turn, as decoding reads
them. The ratio is what reading the cache from memory costs; the script prints the caches' size beside the machine's
last-level cache.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def per_call(fn, calls: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=160, help="cached positions read (prompt + tokens so far)")
    ap.add_argument("--capacity", type=int, default=260, help="positions each buffer holds (prompt + 200 new)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    heads, dim = 4, 48
    caches = [(torch.randn(args.batch, heads, args.capacity, dim), torch.randn(args.batch, heads, args.capacity, dim))
              for _ in range(args.layers)]
    q = torch.randn(args.batch, heads, 1, dim)
    mask = torch.ones(args.batch, 1, 1, args.length, dtype=torch.bool)
    mask[: args.batch // 4, :, :, : args.length // 5] = False  # left padding in a quarter of the rows

    def one(k, v):
        return F.scaled_dot_product_attention(q, k[:, :, :args.length], v[:, :, :args.length], attn_mask=mask)

    hot = per_call(lambda: one(*caches[0]), 400)
    cold = per_call(lambda: [one(k, v) for k, v in caches], 100) / args.layers
    total = sum(k.numel() + v.numel() for k, v in caches) * 4 / 2**20
    read = total * args.length / args.capacity
    try:
        llc = open("/sys/devices/system/cpu/cpu0/cache/index3/size").read().strip()
    except OSError:
        llc = "?"
    print(f"KV cache of {args.layers} layers: {total:.0f} MiB allocated, {read:.0f} MiB read per step; last-level "
          f"cache {llc}")
    print(f"attention per call, one layer's cache again and again: {hot * 1e3:.3f} ms")
    print(f"attention per call, the {args.layers} layers in turn:         {cold * 1e3:.3f} ms")
    print(f"ratio: x{cold / hot:.2f} for reading the cache from memory ({read / args.layers / cold / 1024:.1f} GiB/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
