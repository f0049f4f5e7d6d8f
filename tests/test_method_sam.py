"""SAM-NPO (sharpness-aware unlearning): its update against a hand computation with the weights perturbed by hand, its
reduction to NPO at rho = 0, the exact restoration of the weights, and its behaviour on the small benchmark."""

import copy

import pytest
import torch
from conftest import mean_prob

from obliviate.config import TrainConfig
from obliviate.data import PromptFormat, pad_batch
from obliviate.engine import train
from obliviate.methods import make_method

BETA = 0.1


def seq_logprob(model, b):
    """Per-row sum of answer-token log-probs, written out: log-softmax, the next token, a loop over rows."""
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    rows = []
    for i in range(logits.shape[0]):
        total = logits.new_zeros(())
        for t in range(logits.shape[1] - 1):
            y = int(b["labels"][i, t + 1])
            if y != -100:
                total = total + torch.log_softmax(logits[i, t], -1)[y]
        rows.append(total)
    return torch.stack(rows)


def hand_npo(model, b, ref_logp, beta=BETA):
    """-(2/beta) * mean log sigmoid(-beta * (log pi - log pi_ref)), with log and sigmoid spelled out."""
    r = seq_logprob(model, b) - ref_logp
    return -(2.0 / beta) * torch.log(torch.sigmoid(-beta * r)).mean()


def hand_nll(model, b):
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    target = b["labels"][:, 1:]
    keep = target != -100
    return -torch.log_softmax(logits, -1)[keep].gather(-1, target[keep].unsqueeze(-1)).mean()


class CachedRef:
    """The frozen starting model's sequence log-probs, looked up by item index as the engine's Reference does."""

    def __init__(self, logp):
        self.logp = logp.detach()

    def sequence_logprob(self, split, batch):
        assert split == "forget"
        return self.logp[batch["index"]]


def trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def update_of(method, model, batch, ref):
    """The gradient the engine's backward gets from ``method.loss``, per trainable parameter, and the loss value."""
    model.zero_grad(set_to_none=True)
    loss, logs = method.loss(model, batch, ref)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in trainable(model)}, loss.item(), logs


def setup_models(random_model, fixed_batch, small_bench, lora):
    """A float64 copy of the tiny model (with random LoRA adapters under dropout when ``lora``), the batch, the cached
    reference log-probs of the starting model and the batch's retain stream."""
    base, tok = random_model
    model = copy.deepcopy(base).double()
    if lora:
        from obliviate.models.lora import LoraOptions, apply_lora

        model = apply_lora(model, LoraOptions(r=4, alpha=8, dropout=0.1))
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():  # B = 0 at the start would make the adapters (and their dropout) invisible
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    model.train()
    fmt = PromptFormat(tok)
    retain = pad_batch([fmt.encode(it.question, it.answer) for it in small_bench.retain[:4]], tok.pad_token_id)
    retain["index"] = torch.arange(4)
    with torch.no_grad():
        ref_logp = seq_logprob(model.eval(), fixed_batch) + 3.0  # a reference more confident than the model
    model.train()
    return model, {"forget": fixed_batch, "retain": retain}, CachedRef(ref_logp)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-dropout"])
def test_update_is_the_forget_gradient_at_the_perturbed_weights_by_hand(random_model, fixed_batch, small_bench, lora):
    model, batch, ref = setup_models(random_model, fixed_batch, small_bench, lora)
    rho, gamma, alpha = 2.0, 1.5, 0.7
    method = make_method("SAM-NPO", rho=rho, gamma=gamma, alpha=alpha, beta=BETA)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    torch.manual_seed(11)
    got, value, logs = update_of(method, model, batch, ref)

    # by hand, on a separate copy: the same dropout masks (forget pass, perturbed pass replaying it, then retain)
    hand = copy.deepcopy(model)
    params = [p for _, p in trainable(hand)]
    torch.manual_seed(11)
    start = torch.get_rng_state()
    g0 = torch.autograd.grad(hand_npo(hand, batch["forget"], ref.logp), params)
    after_forget = torch.get_rng_state()
    norm = torch.sqrt(sum((g * g).sum() for g in g0))
    with torch.no_grad():
        for p, g in zip(params, g0):
            p.add_(rho * g / norm)
    torch.set_rng_state(start)
    perturbed = hand_npo(hand, batch["forget"], ref.logp)
    g1 = torch.autograd.grad(perturbed, params)
    with torch.no_grad():
        for p, g in zip(params, g0):
            p.sub_(rho * g / norm)
    torch.set_rng_state(after_forget)
    retain = hand_nll(hand, batch["retain"])
    gr = torch.autograd.grad(retain, params)

    names = [n for n, _ in trainable(model)]
    if lora:
        assert names and all("lora_" in n for n in names)  # only the adapters are perturbed and updated
    for n, a, b in zip(names, g1, gr):  # the library's log-probs are float32: agreement to ~1e-7 relative
        want = gamma * a + alpha * b
        assert float((got[n] - want).norm() / want.norm()) < 1e-5, n
    assert value == pytest.approx(gamma * perturbed.item() + alpha * retain.item(), rel=1e-6)
    assert logs["forget_grad_norm"] == pytest.approx(norm.item(), rel=1e-6)
    # the perturbation matters: the forget gradient at theta is far from the one at theta + delta
    diff = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g1, g0)))
    assert float(diff / torch.sqrt(sum((a * a).sum() for a in g1))) > 0.05
    # frozen weights (LoRA's base) never moved
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)


def test_weights_are_restored_bit_for_bit(random_model, fixed_batch, small_bench):
    model, batch, ref = setup_models(random_model, fixed_batch, small_bench, False)
    model.float()  # float32: subtracting delta again would not give the same bits, copying back does
    ref = CachedRef(ref.logp.float())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss, logs = make_method("SAM-NPO", rho=0.5).loss(model, batch, ref)
    assert logs["forget_loss_perturbed"] != logs["forget_loss_clean"]  # the perturbed pass did run elsewhere
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_rho_zero_is_npo_and_a_tiny_rho_is_close_to_it(random_model, fixed_batch, small_bench):
    model, batch, ref = setup_models(random_model, fixed_batch, small_bench, False)
    npo, v_npo, _ = update_of(make_method("NPO", alpha=2.0), copy.deepcopy(model), batch, ref)
    sam0, v_sam0, _ = update_of(make_method("SAM-NPO", rho=0.0, alpha=2.0), copy.deepcopy(model), batch, ref)
    assert v_sam0 == v_npo
    assert all(torch.equal(sam0[n], npo[n]) for n in npo)
    # through the perturbation path (second pass, surrogate) with a vanishing radius: the same update
    tiny, v_tiny, _ = update_of(make_method("SAM-NPO", rho=1e-9, alpha=2.0), copy.deepcopy(model), batch, ref)
    assert v_tiny == pytest.approx(v_npo, rel=1e-7)
    for n in npo:
        assert float((tiny[n] - npo[n]).norm() / npo[n].norm()) < 1e-5, n


def test_sam_npo_forgets_and_keeps_the_retain_set(load_target, small_bench, tmp_path):
    model, tok = load_target()
    forget0, retain0 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    cfg = TrainConfig(lr=2e-3, max_steps=20, batch_size=4, scheduler="constant")
    model = train(model, tok, make_method("SAM-NPO", rho=0.05, alpha=5.0),
                  {"forget": small_bench.forget, "retain": small_bench.retain}, cfg, tmp_path, progress=False)
    forget1, retain1 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    print(f"SAM-NPO: forget {forget0:.3f} -> {forget1:.3f}, retain {retain0:.3f} -> {retain1:.3f}")
    assert forget1 <= 0.5 * forget0, (forget0, forget1)
    assert retain1 >= 0.8 * retain0, (retain0, retain1)
