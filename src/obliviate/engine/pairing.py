"""Which forget item is seen when, and which retain item accompanies it.

Everything is a pure function of (seed, epoch), so the data order at any step can be recomputed: that is what makes
resuming a killed run exact without saving data-loader state.

Pairing strategies (see the specs, section 11):

* ``random``: 1:1, each forget item paired with a uniformly random retain item, redrawn each epoch (TOFU's default);
* ``sequential``: 1:1, forget item i with retain item i mod |D_r| (most retain data never seen when |D_r| > |D_f|);
* ``cyclic``: forget item i with retain item (epoch * |D_f| + i) mod |D_r|, walking through the whole retain set over
  successive epochs.
"""

from __future__ import annotations

import numpy as np


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which the ``n`` primary items are visited in ``epoch``."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def pair_retain(strategy: str, n_forget: int, n_retain: int, seed: int, epoch: int) -> np.ndarray:
    """For each forget item index, the retain item index paired with it in ``epoch``."""
    idx = np.arange(n_forget)
    if strategy == "random":
        return np.random.default_rng([seed, epoch, 1]).integers(0, n_retain, size=n_forget)
    if strategy == "sequential":
        return idx % n_retain
    if strategy == "cyclic":
        return (epoch * n_forget + idx) % n_retain
    raise ValueError(f"unknown pairing {strategy!r}")


def micro_batch_indices(micro: int, n: int, batch_size: int, world: int, rank: int, seed: int) -> tuple[int, np.ndarray]:
    """(epoch, primary item indices) of this process's share of global micro-batch ``micro``.

    A global batch holds ``batch_size * world`` items; the last batch of an epoch is topped up from the start of the
    epoch's order so every process always gets a full batch.
    """
    gb = batch_size * world
    per_epoch = -(-n // gb)
    epoch, b = divmod(micro, per_epoch)
    order = epoch_order(n, seed, epoch)
    take = order[b * gb:(b + 1) * gb]
    if len(take) < gb:
        take = np.concatenate([take, np.resize(order, gb - len(take))])
    return epoch, take[rank * batch_size:(rank + 1) * batch_size]
