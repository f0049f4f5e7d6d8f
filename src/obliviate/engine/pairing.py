"""Which forget item is seen when, and which retain item accompanies it.

Everything is a pure function of (seed, epoch), so the data order at any step can be recomputed: that is what makes
resuming a killed run exact without saving data-loader state.

An epoch is a table of (forget index, retain index) pairs, visited in a seeded order (``Schedule``). The strategies
(see the specs, section 11, and MELU's ``data_module.py``):

* ``random``: 1:1, |D_f| pairs per epoch; each forget item paired with a uniformly random retain item, redrawn each
  epoch (TOFU's default);
* ``sequential``: 1:1, |D_f| pairs per epoch; forget item i with retain item i mod |D_r| (so when |D_r| > |D_f| most
  of the retain set is never seen);
* ``cyclic``: max(|D_f|, |D_r|) pairs per epoch; pair i is (i mod |D_f|, i mod |D_r|): every retain item is seen once
  per epoch, the shorter set is repeated;
* ``melu`` (Modular Entity-Level Unlearning): for each entity t of the forget set, its forget items F_t and the retain
  items about the same entity R_t are paired row by row, the shorter list cycled to max(|F_t|, |R_t|); then each
  *general* retain item (no entity, or an entity absent from the forget set) is paired with a random forget item;
  forget items whose entity has no retain neighbour are paired with random general items, so every forget item and
  every retain item is in every epoch. Epoch length = sum_t max(|F_t|, |R_t|) + |general| (+ the unmatched forget
  items). Entities come from ``QAItem.entity``.

Without a retain stream the table is just the forget items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAIRINGS = ("random", "sequential", "cyclic", "melu")
MELU_SEED = 1  # stream of the seeded draws inside the MELU table (fixed for a run, like the original's seed 42)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which the ``n`` rows of an epoch's table are visited in ``epoch``."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def pair_retain(strategy: str, n_forget: int, n_retain: int, seed: int, epoch: int) -> np.ndarray:
    """For each forget item index, the retain item index paired with it in ``epoch`` (1:1 strategies only).

    ``cyclic`` and ``melu`` pair one forget item with several retain items per epoch; use ``Schedule``.
    """
    if strategy == "random":
        return np.random.default_rng([seed, epoch, 1]).integers(0, n_retain, size=n_forget)
    if strategy == "sequential":
        return np.arange(n_forget) % n_retain
    if strategy in ("cyclic", "melu"):
        raise ValueError(f"pairing {strategy!r} is not 1:1; use Schedule")
    raise ValueError(f"unknown pairing {strategy!r}")


def melu_pairs(forget_entities: Sequence[str | None], retain_entities: Sequence[str | None],
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MELU's pre-paired table: (forget indices, retain indices), entity modules first, then general items."""
    rng = np.random.default_rng([seed, MELU_SEED])
    forget_by: dict[str, list[int]] = {}
    for i, e in enumerate(forget_entities):
        if e is not None:
            forget_by.setdefault(e, []).append(i)
    retain_by: dict[str, list[int]] = {}
    general: list[int] = []
    for j, e in enumerate(retain_entities):
        if e is not None and e in forget_by:
            retain_by.setdefault(e, []).append(j)
        else:
            general.append(j)
    f_out: list[int] = []
    r_out: list[int] = []
    unmatched = [i for i, e in enumerate(forget_entities) if e is None]
    for entity, fs in forget_by.items():  # dicts keep first-seen order: deterministic
        rs = retain_by.get(entity)
        if not rs:
            unmatched += fs
            continue
        for k in range(max(len(fs), len(rs))):
            f_out.append(fs[k % len(fs)])
            r_out.append(rs[k % len(rs)])
    n_forget = len(forget_entities)
    for j in general:
        f_out.append(int(rng.integers(0, n_forget)))
        r_out.append(j)
    pool = general or list(range(len(retain_entities)))
    for i in sorted(unmatched):
        f_out.append(i)
        r_out.append(pool[int(rng.integers(0, len(pool)))])
    return np.asarray(f_out, dtype=np.int64), np.asarray(r_out, dtype=np.int64)


class Schedule:
    """The epoch table of (forget, retain) index pairs for one strategy, and each micro-batch's share of it."""

    def __init__(self, strategy: str, n_forget: int, n_retain: int = 0, seed: int = 0,
                 forget_entities: Sequence[str | None] | None = None,
                 retain_entities: Sequence[str | None] | None = None):
        if strategy not in PAIRINGS:
            raise ValueError(f"unknown pairing {strategy!r}")
        self.strategy, self.n_forget, self.n_retain, self.seed = strategy, n_forget, n_retain, seed
        self.forget_table = np.arange(n_forget)
        self.retain_table: np.ndarray | None = None
        if n_retain == 0 or strategy in ("random", "sequential"):
            return  # the 1:1 strategies draw the retain partner per epoch (pair_retain)
        if strategy == "cyclic":
            rows = np.arange(max(n_forget, n_retain))
            self.forget_table, self.retain_table = rows % n_forget, rows % n_retain
        else:  # melu
            if forget_entities is None or retain_entities is None:
                raise ValueError("pairing 'melu' needs the entities of the forget and retain items")
            self.forget_table, self.retain_table = melu_pairs(forget_entities, retain_entities, seed)

    @property
    def epoch_length(self) -> int:
        """Rows (forget/retain pairs) per epoch."""
        return len(self.forget_table)

    def micro_batch(self, micro: int, batch_size: int, world: int = 1, rank: int = 0
                    ) -> tuple[int, np.ndarray, np.ndarray | None]:
        """(epoch, forget indices, retain indices or None) of this process's share of global micro-batch ``micro``."""
        epoch, rows = micro_batch_indices(micro, self.epoch_length, batch_size, world, rank, self.seed)
        forget = self.forget_table[rows]
        if self.n_retain == 0:
            return epoch, forget, None
        if self.retain_table is None:
            return epoch, forget, pair_retain(self.strategy, self.n_forget, self.n_retain, self.seed, epoch)[forget]
        return epoch, forget, self.retain_table[rows]

    def epoch_pairs(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Every (forget, retain) pair of ``epoch`` in visiting order (for inspection and tests)."""
        rows = epoch_order(self.epoch_length, self.seed, epoch)
        forget = self.forget_table[rows]
        if self.n_retain == 0:
            return forget, None
        if self.retain_table is None:
            return forget, pair_retain(self.strategy, self.n_forget, self.n_retain, self.seed, epoch)[forget]
        return forget, self.retain_table[rows]


def micro_batch_indices(micro: int, n: int, batch_size: int, world: int, rank: int,
                        seed: int) -> tuple[int, np.ndarray]:
    """(epoch, row indices) of this process's share of global micro-batch ``micro`` over an ``n``-row epoch.

    A global batch holds ``batch_size * world`` rows; the last batch of an epoch is topped up from the start of the
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
