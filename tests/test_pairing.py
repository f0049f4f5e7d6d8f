"""Retain pairing: the 1:1 strategies, cyclic over the whole retain set, MELU's entity modules, the engine using them."""

import copy
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from obliviate.config import TrainConfig
from obliviate.engine import train
from obliviate.engine.pairing import Schedule, epoch_order, melu_pairs, micro_batch_indices, pair_retain
from obliviate.errors import ConfigError
from obliviate.methods.base import Method


def test_one_to_one_strategies_are_unchanged():
    """random and sequential keep their definitions (and so the data order of earlier runs)."""
    nf, nr, seed = 7, 20, 3
    for epoch in range(3):
        want = np.random.default_rng([seed, epoch, 1]).integers(0, nr, size=nf)
        assert pair_retain("random", nf, nr, seed, epoch).tolist() == want.tolist()
        assert pair_retain("sequential", nf, nr, seed, epoch).tolist() == [i % nr for i in range(nf)]
    assert pair_retain("sequential", 5, 3, 0, 0).tolist() == [0, 1, 2, 0, 1]
    s = Schedule("random", nf, nr, seed)
    assert s.epoch_length == nf
    for micro in range(6):
        epoch, f, r = s.micro_batch(micro, 3)
        e2, idx = micro_batch_indices(micro, nf, 3, 1, 0, seed)
        assert epoch == e2 and f.tolist() == idx.tolist()
        assert r.tolist() == pair_retain("random", nf, nr, seed, epoch)[idx].tolist()
    with pytest.raises(ValueError, match="not 1:1"):
        pair_retain("cyclic", nf, nr, seed, 0)


@pytest.mark.parametrize("nf,nr", [(4, 10), (10, 4), (5, 5)])
def test_cyclic_covers_the_whole_retain_set_every_epoch(nf, nr):
    s = Schedule("cyclic", nf, nr, seed=1)
    assert s.epoch_length == max(nf, nr)
    for epoch in range(2):
        f, r = s.epoch_pairs(epoch)
        assert len(f) == max(nf, nr)
        assert set(r.tolist()) == set(range(nr)), "every retain item is seen in every epoch"
        assert set(f.tolist()) == set(range(nf))
        counts = Counter(f.tolist())
        assert max(counts.values()) - min(counts.values()) <= 1, "the shorter set is cycled evenly"
        # MELU's definition: row i pairs (i mod |D_f|, i mod |D_r|)
        rows = epoch_order(max(nf, nr), 1, epoch)
        assert f.tolist() == (rows % nf).tolist() and r.tolist() == (rows % nr).tolist()
    # micro-batches walk the epoch's table in order
    got_f, got_r = [], []
    for micro in range(-(-max(nf, nr) // 2)):
        _, f, r = s.micro_batch(micro, 2)
        got_f += f.tolist()
        got_r += r.tolist()
    f0, r0 = s.epoch_pairs(0)
    assert got_f[:len(f0)] == f0.tolist() and got_r[:len(r0)] == r0.tolist()


def test_melu_pairs_each_entity_with_its_own_neighbours():
    forget = ["A", "A", "B", "B", "B", "C"]  # C has no retain neighbour
    retain = ["A", "B", None, "A", "A", "Z", "A", "Q"]  # None, Z and Q are general
    f, r = melu_pairs(forget, retain, seed=0)
    pairs = list(zip(f.tolist(), r.tolist()))
    # modules: A: max(2 forget, 4 retain) = 4 rows; B: max(3, 1) = 3 rows; general: 3 rows; unmatched C: 1 row
    assert len(pairs) == 4 + 3 + 3 + 1
    a_rows, b_rows = pairs[:4], pairs[4:7]
    assert sorted(j for _, j in a_rows) == [0, 3, 4, 6] and {i for i, _ in a_rows} == {0, 1}
    assert [j for _, j in b_rows] == [1, 1, 1] and sorted(i for i, _ in b_rows) == [2, 3, 4]
    for i, j in pairs[:7]:
        assert forget[i] == retain[j]
    assert sorted(j for _, j in pairs[7:10]) == [2, 5, 7]  # each general item once, with some forget item
    assert pairs[10][0] == 5 and pairs[10][1] in (2, 5, 7)  # C gets a general partner
    assert set(f.tolist()) == set(range(len(forget))) and set(r.tolist()) == set(range(len(retain)))
    assert melu_pairs(forget, retain, seed=0)[0].tolist() == f.tolist()
    s = Schedule("melu", len(forget), len(retain), 0, forget, retain)
    assert s.epoch_length == 11
    got = s.epoch_pairs(2)
    assert sorted(zip(got[0].tolist(), got[1].tolist())) == sorted(pairs)
    with pytest.raises(ValueError, match="entities"):
        Schedule("melu", 3, 3, 0)


def test_pairing_option_is_validated():
    TrainConfig(pairing="melu").validate()
    with pytest.raises(ConfigError, match="pairing"):
        TrainConfig(pairing="entity").validate()


@dataclass
class Recorder(Method):
    """Records which forget and retain items each step sees; its loss is zero."""

    uses_retain = True

    def __post_init__(self):
        self.seen = []

    def loss(self, model, batch, ref):
        self.seen += list(zip(batch["forget"]["index"].tolist(), batch["retain"]["index"].tolist()))
        out = model(input_ids=batch["forget"]["input_ids"], attention_mask=batch["forget"]["attention_mask"]).logits
        return out.sum() * 0.0, {}


def test_engine_pairs_by_entity_under_melu(random_model, small_bench, tmp_path):
    model, tok = random_model
    fa, fb = small_bench.forget[:5], small_bench.forget[5:10]
    assert len({it.entity for it in fa}) == len({it.entity for it in fb}) == 1 and fa[0].entity != fb[0].entity
    forget = fa[:3] + fb[:2]
    retain = fa[3:] + fb[2:] + small_bench.retain[:4]  # 2 neighbours of A, 3 of B, 4 general
    rec = Recorder()
    # A: max(3, 2) = 3 rows, B: max(2, 3) = 3 rows, general: 4 rows -> 10 per epoch, 5 steps of 2
    train(copy.deepcopy(model), tok, rec, {"forget": forget, "retain": retain},
          TrainConfig(lr=1e-6, epochs=1, batch_size=2, pairing="melu"), tmp_path, progress=False)
    assert len(rec.seen) == 10
    want_f, want_r = melu_pairs([it.entity for it in forget], [it.entity for it in retain], seed=0)
    assert sorted(rec.seen) == sorted(zip(want_f.tolist(), want_r.tolist()))
    entity_rows = [(i, j) for i, j in rec.seen if j < 5]
    assert len(entity_rows) == 6 and all(forget[i].entity == retain[j].entity for i, j in entity_rows)
    assert {j for _, j in rec.seen} == set(range(len(retain)))
    # cyclic: one epoch is max(|D_f|, |D_r|) = 9 pairs, every retain item included
    rec = Recorder()
    train(copy.deepcopy(model), tok, rec, {"forget": forget, "retain": retain},
          TrainConfig(lr=1e-6, epochs=1, batch_size=3, pairing="cyclic"), tmp_path / "c", progress=False)
    assert len(rec.seen) == 9 and {j for _, j in rec.seen} == set(range(9))
