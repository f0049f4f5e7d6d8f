"""NPO step time with the reference log-probs cached once (obliviate) versus a frozen reference model run every step
(the anchor toolkit's way). Prints both and their ratio, measured in the same run on the same tiny model and data.

    python benchmarks/reference_cache.py [--steps 30]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch

from obliviate.config import TrainConfig
from obliviate.data import SynthConfig, load_benchmark, write_fictional_authors
from obliviate.engine import train
from obliviate.logprobs import sequence_logprob
from obliviate.methods import make_method
from obliviate.methods.npo import NPO
from obliviate.models import TinyConfig, tiny_from_texts
from obliviate.pipeline import benchmark_texts


class NPOLiveReference(NPO):
    """NPO whose reference log-probs come from a forward pass of a frozen copy at every step."""

    def needs_reference(self):
        return "model"

    def loss(self, model, batch, ref):
        f = batch["forget"]
        with torch.no_grad():
            ref_lp, _ = sequence_logprob(ref.logits(f), f["labels"])

        class Live:
            def sequence_logprob(self, split, b):
                return ref_lp

        return super().loss(model, batch, Live())


def time_run(method, model, tok, bench, steps: int) -> float:
    cfg = TrainConfig(lr=1e-4, max_steps=steps, batch_size=16, scheduler="constant")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(copy.deepcopy(model), tok, method, {"forget": bench.forget, "retain": bench.retain}, cfg, d, progress=False)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bench = load_benchmark(write_fictional_authors(d, SynthConfig(n_authors=40, facts_per_author=10)), "forget10")
        model, tok = tiny_from_texts(benchmark_texts(bench), TinyConfig())
        time_run(make_method("NPO"), model, tok, bench, 2)  # warm-up
        cached = time_run(make_method("NPO"), model, tok, bench, args.steps)
        live = time_run(NPOLiveReference(), model, tok, bench, args.steps)
    print(f"NPO, {args.steps} steps: cached reference {cached:.2f} s, reference forward every step {live:.2f} s, "
          f"speed-up x{live / cached:.2f}")


if __name__ == "__main__":
    main()
