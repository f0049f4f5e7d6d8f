"""Shared fixtures: a small synthetic benchmark and a tiny Llama that has memorised it (trained once per session).

Tests get real models, never mocks. ``target_path`` is a fine-tuned tiny model on disk; call ``load_target()`` for a
fresh copy each test can train without disturbing others. ``random_model`` is an untrained tiny model for exact
hand-computation checks on fixed inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# two threads, or OMP_NUM_THREADS when set: two torch jobs with two threads each on two cores run 5-45x slower, so a
# suite run beside other work should be given OMP_NUM_THREADS=1 (and this must not override it)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OBLIVIATE_SHARED_DATA", REPO.parent / "shared" / "data"))
TOFU = SHARED_DATA / "tofu"
RWKU = SHARED_DATA / "rwku"

SMALL_SYNTH = dict(n_authors=20, facts_per_author=5, n_holdout_authors=2, n_general=10, seed=0)
SMALL_TINY = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=128, seed=0)
def mean_prob(model, tok, items):
    """Mean over items of the answer's geometric-mean token probability (TOFU's Q_A_Prob), for behavioural tests."""
    import math

    from obliviate.data import PromptFormat
    from obliviate.scoring.passes import score_sequences

    fmt = PromptFormat(tok)
    with torch.no_grad():
        scores = score_sequences(model.eval(), [fmt.encode(it.question, it.answer) for it in items], tok.pad_token_id,
                                 batch_size=32)
    return sum(math.exp(float(s.logprobs.astype("float64").mean())) for s in scores) / len(items)


def perturbed_copy(model, scale, seed=1):
    """A deep copy of ``model`` with seeded Gaussian noise of std ``scale`` added to every parameter."""
    import copy

    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return other


SMALL_FINETUNE = dict(lr=5e-3, epochs=40, batch_size=16, warmup_ratio=0.05, scheduler="linear", seed=0)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep tests out of the user's model cache."""
    os.environ["OBLIVIATE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def small_bench_dir(tmp_path_factory) -> Path:
    from obliviate.data import SynthConfig, write_fictional_authors

    return write_fictional_authors(tmp_path_factory.mktemp("bench") / "fictional-authors", SynthConfig(**SMALL_SYNTH))


@pytest.fixture(scope="session")
def small_bench(small_bench_dir):
    from obliviate.data import load_benchmark

    return load_benchmark(small_bench_dir, "forget10")


@pytest.fixture(scope="session")
def trained_models(small_bench, tmp_path_factory) -> dict[str, Path]:
    """Tiny target and oracle fine-tuned on the small benchmark (about 20 s on two cores)."""
    from obliviate.config import TrainConfig
    from obliviate.models import TinyConfig
    from obliviate.pipeline import finetune

    out = tmp_path_factory.mktemp("finetuned")
    return finetune(small_bench, "tiny", out, TrainConfig(**SMALL_FINETUNE), TinyConfig(**SMALL_TINY), progress=False,
                    log=lambda *a: None)


@pytest.fixture(scope="session")
def target_path(trained_models) -> Path:
    return trained_models["target"]


@pytest.fixture
def load_target(target_path):
    """A function returning a fresh (model, tokenizer) copy of the trained target, in train mode on the CPU."""
    from obliviate.models import load_model

    def load():
        model, tok = load_model(target_path, dtype="fp32", device="cpu")
        return model, tok

    return load


@pytest.fixture(scope="session")
def random_model(small_bench):
    """An untrained tiny model (fixed seed) and its tokenizer, for exact checks of losses and metrics."""
    from obliviate.models import TinyConfig, tiny_from_texts
    from obliviate.pipeline import benchmark_texts

    model, tok = tiny_from_texts(benchmark_texts(small_bench), TinyConfig(**SMALL_TINY))
    return model.eval(), tok


@pytest.fixture
def fixed_batch(random_model, small_bench):
    """A padded batch of four forget items of different lengths (so padding is present), with ``index``."""
    from obliviate.data import PromptFormat, pad_batch

    _, tok = random_model
    fmt = PromptFormat(tok)
    items = small_bench.forget[:4]
    encs = [fmt.encode(it.question, it.answer) for it in items]
    batch = pad_batch(encs, tok.pad_token_id)
    batch["index"] = torch.arange(len(items))
    return batch


@pytest.fixture(scope="session")
def second_oracle(small_bench, tmp_path_factory) -> Path:
    """An oracle retrained independently of ``trained_models``' (seed 1 for initialisation and data order; same data
    and settings, about 10 s): the reference a certificate's "the oracle passes" must hold against, since an oracle
    compared with itself passes every check by construction."""
    from obliviate.config import TrainConfig
    from obliviate.models import TinyConfig
    from obliviate.pipeline import finetune

    out = tmp_path_factory.mktemp("second-oracle")
    return finetune(small_bench, "tiny", out, TrainConfig(**{**SMALL_FINETUNE, "seed": 1}),
                    TinyConfig(**{**SMALL_TINY, "seed": 1}), which=("oracle",), progress=False,
                    log=lambda *a: None)["oracle"]
