"""Linear decodability of answers from a deep layer: does a fresh linear probe still read the forget facts?

Used to report RLCP's goal (the forget facts linearly undecodable from deep layers, the logic kept) on any model. The
probe is a multinomial logistic regression W (V x d, no bias) from the hidden state h_t of decoder block ``layer``
(-1 = the last) at each position t that predicts an answer token y_{t+1}, to that token. It is fit on the answer
positions of ``fit_items`` (the retain set: the readout that works for what the model still knows), full batch, with
Adam for ``steps`` steps on mean cross-entropy + ``l2`` * ||W||^2, seeded, and evaluated on each set of ``eval_sets``:

    accuracy = mean_t [argmax_v (W h_t)_v == y_{t+1}]        chance = share of the most frequent answer token

A probe fit on the forget set itself would not do: a d-dimensional linear map can fit a few hundred points whatever they
encode, so in-sample accuracy says nothing about knowledge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.collate import item_batches
from ..methods.shared import decoder_layers, layer_activations


@torch.no_grad()
def answer_features(model, tokenizer, items, layer: int = -1, batch_size: int = 16
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 hidden states of block ``layer`` at the answer-predicting positions (N, d), the answer tokens (N,))."""
    layer = layer % len(decoder_layers(model))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    xs, ys = [], []
    for b in item_batches(tokenizer, items, batch_size, device):
        h = layer_activations(model, b, layer)
        target = b["labels"][:, 1:]
        keep = target != -100
        xs.append(h[:, :-1][keep].float().cpu())
        ys.append(target[keep].cpu())
    model.train(was_training)
    return torch.cat(xs), torch.cat(ys)


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 300, lr: float = 0.05, l2: float = 1e-4,
              seed: int = 0) -> torch.Tensor:
    """Weights (n_classes, d) of a logistic regression fit by full-batch Adam."""
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n_classes, x.shape[1], generator=g) * 0.01).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(x @ w.T, y) + l2 * w.square().sum()
            loss.backward()
            opt.step()
    return w.detach()


def probe_decodability(model, tokenizer, fit_items, eval_sets: dict, layer: int = -1, steps: int = 300,
                       lr: float = 0.05, l2: float = 1e-4, seed: int = 0) -> dict:
    """``{name: {"accuracy", "chance", "tokens"}}`` for each eval set, plus ``"fit"`` (the probe on its own data)."""
    n_classes = model.get_output_embeddings().weight.shape[0]
    x, y = answer_features(model, tokenizer, fit_items, layer)
    w = fit_probe(x, y, n_classes, steps, lr, l2, seed)
    out = {}
    for name, items in {"fit": None, **eval_sets}.items():
        xe, ye = (x, y) if items is None else answer_features(model, tokenizer, items, layer)
        acc = float(((xe @ w.T).argmax(-1) == ye).float().mean())
        chance = float(torch.bincount(ye).max()) / len(ye)
        out[name] = {"accuracy": round(acc, 4), "chance": round(chance, 4), "tokens": int(len(ye))}
    return out
