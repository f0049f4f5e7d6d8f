"""The shared log-prob helper and each loss of the core methods, against token-by-token hand computations."""

import math

import pytest
import torch

from obliviate.logprobs import forward_logits, nll_mean, sequence_logprob, token_logprobs
from obliviate.methods import make_method
from obliviate.methods.losses import kl_to_reference, npo_loss, simnpo_loss


def hand_sequence_logprobs(logits, labels):
    """Plain loops: for each sequence, sum log softmax(logits[t])[labels[t+1]] over target positions."""
    sums, counts = [], []
    for b in range(labels.shape[0]):
        s, n = 0.0, 0
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            row = logits[b, t].double()
            s += float(row[y] - torch.logsumexp(row, 0))
            n += 1
        sums.append(s)
        counts.append(n)
    return sums, counts


@pytest.fixture
def outputs(random_model, fixed_batch):
    model, _ = random_model
    with torch.no_grad():
        return forward_logits(model, fixed_batch)


def test_padding_and_prompt_are_not_targets(fixed_batch):
    labels = fixed_batch["labels"]
    assert (labels[fixed_batch["attention_mask"] == 0] == -100).all()
    lengths = fixed_batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1, "fixture should contain padding"


def test_sequence_logprob_matches_loops(outputs, fixed_batch):
    sums, counts = hand_sequence_logprobs(outputs, fixed_batch["labels"])
    lp, n = sequence_logprob(outputs, fixed_batch["labels"])
    assert n.tolist() == counts
    for got, want in zip(lp.tolist(), sums):
        assert got == pytest.approx(want, rel=1e-5)
    assert nll_mean(outputs, fixed_batch["labels"]).item() == pytest.approx(-sum(sums) / sum(counts), rel=1e-5)


def test_label_minus_100_is_never_used_as_an_index(outputs, fixed_batch):
    lp, mask = token_logprobs(outputs, fixed_batch["labels"])
    assert (lp[~mask] == 0).all()


def test_grad_ascent_and_grad_diff(random_model, fixed_batch):
    model, _ = random_model
    batch = {"forget": fixed_batch, "retain": fixed_batch}
    with torch.no_grad():
        sums, counts = hand_sequence_logprobs(forward_logits(model, fixed_batch), fixed_batch["labels"])
        nll = -sum(sums) / sum(counts)
        ga, _ = make_method("GradAscent").loss(model, batch, None)
        gd, _ = make_method("GradDiff", gamma=2.0, alpha=0.5).loss(model, batch, None)
    assert ga.item() == pytest.approx(-nll, rel=1e-5)
    assert gd.item() == pytest.approx(2.0 * -nll + 0.5 * nll, rel=1e-5)


class CachedRef:
    """A reference whose cached forget log-probs are given numbers."""

    def __init__(self, values):
        self.values = torch.tensor(values)

    def sequence_logprob(self, split, batch):
        return self.values[batch["index"]]


def test_npo_loss_by_hand(random_model, fixed_batch):
    model, _ = random_model
    beta = 0.3
    with torch.no_grad():
        sums, _ = hand_sequence_logprobs(forward_logits(model, fixed_batch), fixed_batch["labels"])
        ref_lp = [s + d for s, d in zip(sums, [0.5, -1.0, 2.0, 0.0])]
        loss, _ = make_method("NPO", beta=beta, alpha=0.0).loss(model, {"forget": fixed_batch}, CachedRef(ref_lp))
    want = 0.0
    for s, r in zip(sums, ref_lp):
        x = -beta * (s - r)
        want += -(2 / beta) * math.log(1 / (1 + math.exp(-x)))
    assert loss.item() == pytest.approx(want / len(sums), rel=1e-5)
    # the pure function agrees on plain numbers
    assert npo_loss(torch.tensor([-3.0]), torch.tensor([-1.0]), 0.1).item() == pytest.approx(
        -(2 / 0.1) * math.log(1 / (1 + math.exp(-0.1 * 2.0))), rel=1e-6)


def test_simnpo_loss_by_hand(random_model, fixed_batch):
    model, _ = random_model
    beta, delta = 4.5, 0.2
    with torch.no_grad():
        sums, counts = hand_sequence_logprobs(forward_logits(model, fixed_batch), fixed_batch["labels"])
        loss, _ = make_method("SimNPO", beta=beta, delta=delta, gamma=1.0, alpha=0.0).loss(
            model, {"forget": fixed_batch}, None)
    want = sum(-(2 / beta) * math.log(1 / (1 + math.exp(-beta * (-s / n - delta)))) for s, n in zip(sums, counts))
    assert loss.item() == pytest.approx(want / len(sums), rel=1e-5)
    assert simnpo_loss(torch.tensor([-6.0]), torch.tensor([3]), 1.0, 0.0).item() == pytest.approx(
        -2 * math.log(1 / (1 + math.exp(-2.0))), rel=1e-6)


def test_kl_retain_loss_by_hand_and_blind_to_padding_and_prompt(random_model, fixed_batch):
    model, _ = random_model
    torch.manual_seed(0)
    with torch.no_grad():
        logits = forward_logits(model, fixed_batch)
        ref_logits = logits + torch.randn_like(logits)
    labels = fixed_batch["labels"]
    total, n = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if labels[b, t + 1] == -100:
                continue
            p = torch.log_softmax(logits[b, t].double(), 0)
            q = torch.log_softmax(ref_logits[b, t].double(), 0)
            total += float((q.exp() * (q - p)).sum())
            n += 1
    got = kl_to_reference(logits, ref_logits, labels)
    assert got.item() == pytest.approx(total / n, rel=1e-5)
    # scrambling logits at prompt and padding positions changes nothing
    scrambled = ref_logits.clone()
    not_target = torch.cat([labels[:, 1:] == -100, torch.ones_like(labels[:, :1], dtype=torch.bool)], 1)
    scrambled[not_target] = torch.randn_like(scrambled[not_target]) * 10
    assert kl_to_reference(logits, scrambled, labels).item() == pytest.approx(got.item(), rel=1e-6)


def test_bad_hyperparameters_are_rejected():
    from obliviate.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown hyperparameter 'betta'"):
        make_method("NPO", betta=0.1)
    with pytest.raises(ConfigError, match="out of range"):
        make_method("NPO", beta=-1)
    with pytest.raises(ConfigError, match="must be one of"):
        make_method("GradDiff", retain_loss="mse")
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        make_method("nope")
