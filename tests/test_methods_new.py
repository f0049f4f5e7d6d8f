"""This year's methods: each loss or update against a hand computation (plain loops, not the library's helpers) on a
fixed tiny model and batch, and each method's behaviour on the small synthetic benchmark."""

import copy
import math

import pytest
import torch
from conftest import mean_prob, perturbed_copy

from obliviate.config import TrainConfig
from obliviate.data import PromptFormat, pad_batch
from obliviate.engine import train
from obliviate.errors import ConfigError
from obliviate.logprobs import forward_logits
from obliviate.methods import make_method

# --- helpers (hand computations use only torch primitives and loops) -------------------------------------------------


def answer_positions(labels):
    """[(b, t)] for every position t whose logits predict an answer token (labels[b, t + 1] != -100)."""
    return [(b, t) for b in range(labels.shape[0]) for t in range(labels.shape[1] - 1) if labels[b, t + 1] != -100]


def hand_nll_mean(logits, labels):
    total, n = 0.0, 0
    for b, t in answer_positions(labels):
        row = logits[b, t].detach().double()
        total += float(torch.logsumexp(row, 0) - row[int(labels[b, t + 1])])
        n += 1
    return total / n


def token_nll(model, b):
    """Token-mean answer NLL as a differentiable tensor: log-softmax, pick the next token, average (no library code)."""
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    target = b["labels"][:, 1:]
    keep = target != -100
    return -torch.log_softmax(logits.float(), -1)[keep].gather(-1, target[keep].unsqueeze(-1)).mean()


def batch_of(tok, items, with_index=True):
    fmt = PromptFormat(tok)
    b = pad_batch([fmt.encode(it.question, it.answer) for it in items], tok.pad_token_id)
    if with_index:
        b["index"] = torch.arange(len(items))
    return b


class ModelRef:
    """A reference exposing a frozen model's logits (and the model), as the engine's ``Reference`` does."""

    def __init__(self, model):
        self.model = model.eval()

    @torch.no_grad()
    def logits(self, batch):
        return forward_logits(self.model, batch)


def grads_of(loss, model):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()
            if p.requires_grad}


# --- SHRED -------------------------------------------------------------------------------------------------------------


def test_shred_demotion_target_reproduces_the_papers_worked_example():
    from obliviate.methods.losses import demotion_target

    probs = torch.tensor([[0.77, 0.12, 0.05, 0.03, 0.03]])
    ids = torch.tensor([[7, 3, 9, 1, 4]])
    qa, ok = demotion_target(probs, ids, torch.tensor([7]), torch.tensor([True]), "A")
    assert ok.all() and qa[0].tolist() == pytest.approx([0, 0.12 / 0.23, 0.05 / 0.23, 0.03 / 0.23, 0.03 / 0.23])
    assert [round(x, 2) for x in qa[0].tolist()] == [0, 0.52, 0.22, 0.13, 0.13]
    qb, _ = demotion_target(probs, ids, torch.tensor([7]), torch.tensor([True]), "B", nucleus=0.9)
    assert qb[0].tolist() == pytest.approx([0, 0, 0, 0.5, 0.5])
    # an unselected position keeps the teacher's top-k, renormalised
    qr, _ = demotion_target(probs, ids, torch.tensor([7]), torch.tensor([False]), "B", nucleus=0.9)
    assert qr[0].tolist() == pytest.approx((probs[0] / probs.sum()).tolist())


@pytest.mark.parametrize("variant,selection,skip", [("A", "sequence", 0), ("B", "global", 2)])
def test_shred_loss_by_hand(random_model, fixed_batch, small_bench, variant, selection, skip):
    teacher, tok = random_model
    k, frac, nucleus = 5, 0.4, 0.002  # the untrained model is nearly uniform: a small nucleus keeps some top-k
    method = make_method("SHRED", fraction=frac, variant=variant, top_k=k, skip_first_tokens=skip,
                         selection=selection, nucleus=nucleus)
    method.setup(teacher, tok, {"forget": small_bench.forget[:4]})
    student = perturbed_copy(teacher, 0.02)
    labels = fixed_batch["labels"]
    with torch.no_grad():
        t_logits = forward_logits(teacher, fixed_batch)
        loss, logs = method.loss(student, {"forget": fixed_batch}, None)
        s_logits = forward_logits(student, fixed_batch)
    # teacher probabilities and top-k at each answer position, with its index inside its answer
    rows = []
    for b in range(labels.shape[0]):
        j = 0
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            p = torch.softmax(t_logits[b, t].double(), 0)
            order = sorted(range(len(p)), key=lambda v: -float(p[v]))[:k]
            rows.append({"b": b, "t": t, "j": j, "y": y, "p_y": float(p[y]), "top": [(v, float(p[v])) for v in order]})
            j += 1
    eligible = [r for r in rows if r["j"] >= skip]
    selected = set()
    if selection == "sequence":
        for b in range(labels.shape[0]):
            mine = sorted([r for r in eligible if r["b"] == b], key=lambda r: r["p_y"])
            n = max(1, math.ceil(frac * len(mine))) if mine else 0
            selected |= {(r["b"], r["t"]) for r in mine[:n]}
    else:
        mine = sorted(eligible, key=lambda r: r["p_y"])
        selected = {(r["b"], r["t"]) for r in mine[:max(1, math.ceil(frac * len(mine)))]}
    total, n, demoted = 0.0, 0, 0
    for r in eligible:
        removed = set()
        if (r["b"], r["t"]) in selected:
            removed.add(r["y"])
            if variant == "B":
                mass = 0.0
                for v, pv in r["top"]:
                    if mass < nucleus:
                        removed.add(v)
                    mass += pv
        kept = [(v, pv) for v, pv in r["top"] if v not in removed]
        z = sum(pv for _, pv in kept)
        if z == 0:
            continue
        logp = torch.log_softmax(s_logits[r["b"], r["t"]].double(), 0)
        total += sum(pv / z * (math.log(pv / z) - float(logp[v])) for v, pv in kept)
        n += 1
        demoted += (r["b"], r["t"]) in selected
    assert loss.item() == pytest.approx(total / n, rel=1e-4)
    assert 0 < logs["demoted_positions"] == demoted < n


def test_shred_teacher_is_computed_once_in_setup(random_model, fixed_batch, small_bench):
    teacher, tok = random_model
    method = make_method("SHRED", top_k=4)
    method.setup(teacher, tok, {"forget": small_bench.forget[:4]})
    calls = []
    student = perturbed_copy(teacher, 0.02)
    handle = teacher.register_forward_hook(lambda *a: calls.append(1))
    try:
        method.loss(student, {"forget": fixed_batch}, None)
    finally:
        handle.remove()
    assert calls == []  # the teacher is never run again: its top-k are cached
    assert method.targets[0]["q"].shape[1] == 4


# --- GU ----------------------------------------------------------------------------------------------------------------


def hand_project(g, basis):
    """Gram-Schmidt on the basis (float64, loops), then subtract the projections one by one."""
    ortho = []
    for u in basis:
        v = u.double().clone()
        for _ in range(2):
            for q in ortho:
                v = v - float(v @ q) * q
        if float(v.norm()) > 1e-12 * float(u.double().norm()):
            ortho.append(v / v.norm())
    out = g.double().clone()
    for q in ortho:
        out = out - float(out @ q) * q
    return out


@pytest.mark.parametrize("mode", ["global", "per_tensor"])
def test_gu_update_is_the_hand_projection_and_orthogonal_to_the_retain_basis(random_model, fixed_batch, small_bench,
                                                                            mode):
    base, tok = random_model
    model = copy.deepcopy(base).train()
    method = make_method("GU", inner="GradAscent", retain_loss="nll", basis_size=3, mode=mode, inject_tangent=0,
                         last_layers=1)
    method.setup(model, tok, {"forget": small_bench.forget, "retain": small_bench.retain})
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("layers.0." not in n for n in names)
    retains = [batch_of(tok, small_bench.retain[i:i + 4]) for i in (0, 4, 8)]
    for r in retains:  # no optimizer step: every retain gradient is taken at the same parameters
        out, _ = method.loss(model, {"forget": fixed_batch, "retain": r}, None)
    got = grads_of(out, model)
    basis = [grads_of(token_nll(model, r), model) for r in retains]
    g_f = grads_of(-token_nll(model, fixed_batch), model)
    assert out.item() == pytest.approx(-hand_nll_mean(forward_logits(model, fixed_batch), fixed_batch["labels"])
                                       + hand_nll_mean(forward_logits(model, retains[-1]), retains[-1]["labels"]),
                                       rel=1e-4)
    if mode == "global":
        flat = lambda d: torch.cat([d[n].reshape(-1) for n in names])  # noqa: E731
        want = hand_project(flat(g_f), [flat(b) for b in basis])
        update = flat(got).double()
        assert torch.allclose(update, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
        for b in basis:
            u = flat(b).double()
            assert abs(float(update @ u)) / float(update.norm() * u.norm()) < 1e-6
    else:
        for n in names:
            want = hand_project(g_f[n].reshape(-1), [b[n].reshape(-1) for b in basis])
            update = got[n].reshape(-1).double()
            assert torch.allclose(update, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()) + 1e-12)
            for b in basis:
                u = b[n].reshape(-1).double()
                if float(u.norm()) > 0 and float(update.norm()) > 0:
                    assert abs(float(update @ u)) / float(update.norm() * u.norm()) < 1e-6
    # projection removed something: the raw forget gradient is not orthogonal to the basis
    raw = torch.cat([g_f[n].reshape(-1) for n in names]).double()
    u0 = torch.cat([basis[-1][n].reshape(-1) for n in names]).double()
    assert abs(float(raw @ u0)) / float(raw.norm() * u0.norm()) > 1e-3


def test_gu_adds_back_the_retain_gradients_tangential_part_and_keeps_k_vectors(random_model, fixed_batch, small_bench):
    base, tok = random_model
    model = copy.deepcopy(base).train()
    method = make_method("GU", inner="GradAscent", retain_loss="nll", basis_size=2, mode="global", alpha=0.5,
                         last_layers=0)
    method.setup(model, tok, {"forget": small_bench.forget, "retain": small_bench.retain})
    for i in range(3):
        r = batch_of(tok, small_bench.retain[4 * i:4 * i + 4])
        out, logs = method.loss(model, {"forget": fixed_batch, "retain": r}, None)
    assert logs["basis_vectors"] == 2  # fifo: the oldest was dropped
    got = grads_of(out, model)
    names = list(got)
    flat = lambda d: torch.cat([d[n].reshape(-1) for n in names]).double()  # noqa: E731
    g_f = flat(grads_of(-token_nll(model, fixed_batch), model))
    g_r = flat(grads_of(token_nll(model, r), model))
    prev = flat(grads_of(token_nll(model, batch_of(tok, small_bench.retain[4:8])), model))
    normal = hand_project(g_f, [prev, g_r])
    # the current retain gradient is in the basis, so its tangential part is all of it
    want = normal + 0.5 * g_r
    assert torch.allclose(flat(got), want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


def test_gu_rejects_bad_settings():
    with pytest.raises(ConfigError, match="must be one of"):
        make_method("GU", mode="sideways")
    with pytest.raises(ConfigError, match="unknown method"):
        make_method("GU", inner="Nope")
    with pytest.raises(ConfigError, match="cannot wrap itself"):
        make_method("GU", inner="GU")
    with pytest.raises(ConfigError, match="out of range"):
        make_method("GU", basis_size=0)


# --- K-FADE ------------------------------------------------------------------------------------------------------------


def layer_io(model, module, b, labels_for_loss):
    """Inputs (T, in) and output gradients (T, out) of ``module`` for one unpadded sequence and the summed NLL of
    ``labels_for_loss``; a forward hook keeps the output and its gradient."""
    got = {}

    def hook(mod, args, out):
        got["a"] = args[0].detach()[0]
        out.retain_grad()
        got["out"] = out

    h = module.register_forward_hook(hook)
    try:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    finally:
        h.remove()
    total = 0
    for t in range(labels_for_loss.shape[1] - 1):
        y = int(labels_for_loss[0, t + 1])
        if y != -100:
            total = total - torch.log_softmax(logits[0, t].float(), 0)[y]
    total.backward()
    return got["a"].double(), got["out"].grad[0].double()


@pytest.mark.parametrize("curvature", ["kfac", "ekfac"])
def test_kfade_step_is_the_damped_kronecker_solve(random_model, small_bench, tmp_path, curvature):
    base, tok = random_model
    model = copy.deepcopy(base)
    target = r"layers\.1\.self_attn\.o_proj$"
    damping, eps = 0.3, 0.01
    method = make_method("KFADE", steps=1, step_size=eps, damping=damping, curvature=curvature,
                         fisher_labels="empirical", target=target, retain_samples=6)
    retain, forget = small_bench.retain[:6], small_bench.forget[:4]
    layer = dict(model.named_modules())["model.layers.1.self_attn.o_proj"]
    w0 = layer.weight.detach().clone().double()
    # hand factors: one sequence at a time, one token at a time
    acts, outs = [], []
    for it in retain:
        b = batch_of(tok, [it], with_index=False)
        m = copy.deepcopy(base)
        a, g = layer_io(m, dict(m.named_modules())["model.layers.1.self_attn.o_proj"], b, b["labels"])
        for t in range(a.shape[0]):
            acts.append(a[t])
            outs.append(g[t])
    n = len(acts)
    A = sum(torch.outer(a, a) for a in acts) / n
    S = sum(torch.outer(g, g) for g in outs) / n
    if curvature == "kfac":
        G = torch.kron(S, A)  # row-major vec: vec(S X A) = (S kron A) vec(X)
        lam = damping * float(torch.trace(S) * torch.trace(A)) / G.shape[0]  # mean Kronecker eigenvalue
    else:
        _, qa = torch.linalg.eigh(A)
        _, qs = torch.linalg.eigh(S)
        fit = torch.zeros(S.shape[0], A.shape[0], dtype=torch.float64)
        for a, g in zip(acts, outs):
            fit += torch.outer((qs.T @ g) ** 2, (qa.T @ a) ** 2)
        fit /= n
        Q = torch.kron(qs, qa)
        G = Q @ torch.diag(fit.reshape(-1)) @ Q.T
        lam = damping * float(fit.mean())
    # the forget gradient, by autograd on the token-mean NLL of all forget items
    m = copy.deepcopy(base)
    lay = dict(m.named_modules())["model.layers.1.self_attn.o_proj"]
    (grad,) = torch.autograd.grad(token_nll(m, batch_of(tok, forget, with_index=False)), [lay.weight])
    gvec = grad.double().reshape(-1)
    step = torch.linalg.solve(G + lam * torch.eye(G.shape[0], dtype=torch.float64), gvec)
    eta = math.sqrt(2 * eps / float(gvec @ step))
    want = w0 + eta * step.reshape(w0.shape)
    cfg = TrainConfig(batch_size=2)
    method.apply(model, tok, {"forget": forget, "retain": retain}, cfg, tmp_path)
    got = layer.weight.detach().double()
    assert torch.allclose(got - w0, want - w0, rtol=2e-3, atol=2e-3 * float((want - w0).abs().max()))
    others = [(n_, p) for n_, p in model.named_parameters() if "layers.1.self_attn.o_proj" not in n_]
    assert all(torch.equal(p, dict(base.named_parameters())[n_]) for n_, p in others)


def test_kfade_caches_the_factors_and_uses_the_measured_trust_region(random_model, small_bench, tmp_path):
    import json

    from obliviate.pipeline import cache_root

    base, tok = random_model
    data = {"forget": small_bench.forget[:4], "retain": small_bench.retain[:6]}
    hp = dict(steps=2, step_size=1e-4, target=r"layers\.1\.mlp\.down_proj$", retain_samples=6, kl_samples=4,
              trust_region="measured", seed=3)
    before = set((cache_root() / "kfade").glob("*.safetensors")) if (cache_root() / "kfade").exists() else set()
    m1 = copy.deepcopy(base)
    make_method("KFADE", **hp).apply(m1, tok, data, TrainConfig(batch_size=2), tmp_path / "a")
    files = set((cache_root() / "kfade").glob("*.safetensors")) - before
    assert len(files) == 1
    stamp = next(iter(files)).stat().st_mtime_ns
    m2 = copy.deepcopy(base)
    make_method("KFADE", **{**hp, "damping": 0.2}).apply(m2, tok, data, TrainConfig(batch_size=2), tmp_path / "b")
    assert set((cache_root() / "kfade").glob("*.safetensors")) - before == files  # reused, not recomputed
    assert next(iter(files)).stat().st_mtime_ns == stamp
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert all(0 < x["retain_kl"] <= 1e-4 and x["eta"] > 0 for x in lines)


# --- SSD ---------------------------------------------------------------------------------------------------------------


def test_ssd_dampens_exactly_the_selected_parameters(random_model, small_bench, tmp_path):
    base, tok = random_model
    model = copy.deepcopy(base)
    forget, retain = small_bench.forget[:4], small_bench.retain[:6]
    alpha, lam = 1.0, 0.5
    fisher = {}
    for name, items in (("f", forget), ("d", retain)):
        m = copy.deepcopy(base)
        acc = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in m.named_parameters()}
        batches = [items[i:i + 2] for i in range(0, len(items), 2)]
        for chunk in batches:
            m.zero_grad(set_to_none=True)
            token_nll(m, batch_of(tok, chunk, with_index=False)).backward()
            for n, p in m.named_parameters():
                acc[n] += p.grad.double() ** 2
        fisher[name] = {n: v / len(batches) for n, v in acc.items()}
    make_method("SSD", alpha=alpha, dampening=lam).apply(model, tok, {"forget": forget, "retain": retain},
                                                         TrainConfig(batch_size=2), tmp_path)
    new = dict(model.named_parameters())
    n_sel = n_all = 0
    for n, p0 in base.named_parameters():
        i_f, i_d = fisher["f"][n].reshape(-1), fisher["d"][n].reshape(-1)
        w0, w1 = p0.detach().double().reshape(-1), new[n].detach().double().reshape(-1)
        if n == "model.norm.weight":  # one tensor element by element
            for j in range(len(w0)):
                if i_f[j] > alpha * i_d[j]:
                    want = w0[j] * min(lam * i_d[j] / i_f[j], 1.0)
                else:
                    want = w0[j]
                assert float(w1[j]) == pytest.approx(float(want), rel=1e-4, abs=1e-7)
        sel = i_f > alpha * i_d
        want = torch.where(sel, w0 * torch.clamp(lam * i_d / i_f.clamp(min=1e-300), max=1.0), w0)
        assert torch.allclose(w1, want, rtol=1e-3, atol=1e-6)
        n_sel += int(sel.sum())
        n_all += len(w0)
    assert 0 < n_sel < n_all


# --- OFMU --------------------------------------------------------------------------------------------------------------


def test_ofmu_first_order_inner_and_outer_updates_by_hand(random_model, fixed_batch, small_bench):
    base, tok = random_model
    model = copy.deepcopy(base).train()
    model.set_attn_implementation("eager")  # for the exact Hessian-vector product below (double backward)
    beta, rho = 0.7, 0.3
    method = make_method("OFMU", forget_loss="ga", beta=beta, rho=rho, first_order=1, fd_radius=1e-3)
    r = batch_of(tok, small_bench.retain[:4])
    batch = {"forget": fixed_batch, "retain": r}
    out, logs = method.loss(model, batch, None)
    assert logs["phase_inner"] == 1.0
    got = grads_of(out, model)
    names = list(got)
    g_f = grads_of(token_nll(model, fixed_batch), model)
    g_r = grads_of(token_nll(model, r), model)
    dot = sum(float((g_f[n].double() * g_r[n].double()).sum()) for n in names)
    rr = sum(float((g_r[n].double() ** 2).sum()) for n in names)
    ff = sum(float((g_f[n].double() ** 2).sum()) for n in names)
    for n in names:
        want = -(g_f[n].double() - beta * dot / rr * g_r[n].double())
        assert torch.allclose(got[n].double(), want, rtol=1e-4, atol=1e-7)
    assert logs["similarity"] == pytest.approx(dot * dot / (ff * rr), rel=1e-4)
    # the outer step: retain gradient + rho * 2 H g_F, the Hessian-vector product by double backward here
    out, logs = method.loss(model, batch, None)
    assert logs["phase_inner"] == 0.0
    got = grads_of(out, model)
    params = [p for p in model.parameters() if p.requires_grad]
    gs = torch.autograd.grad(token_nll(model, fixed_batch), params, create_graph=True)
    hvp = torch.autograd.grad(sum((g * g.detach()).sum() for g in gs), params)
    want = torch.cat([(g_r[n].double() + rho * 2 * h.double()).reshape(-1) for n, h in zip(names, hvp)])
    have = torch.cat([got[n].double().reshape(-1) for n in names])
    # a finite difference is not exact: compare the whole update vector
    assert float((have - want).norm() / want.norm()) < 2e-2
    hvp_only = torch.cat([h.double().reshape(-1) for h in hvp])
    assert float((have - want).norm()) < 0.1 * float(rho * 2 * hvp_only.norm())  # the HVP part itself is right


def test_ofmu_exact_inner_loss_is_the_penalised_objective(random_model, fixed_batch, small_bench):
    base, tok = random_model
    model = copy.deepcopy(base).train()
    model.set_attn_implementation("eager")
    beta = 2.0
    method = make_method("OFMU", forget_loss="ga", beta=beta, first_order=0)
    r = batch_of(tok, small_bench.retain[:4])
    out, _ = method.loss(model, {"forget": fixed_batch, "retain": r}, None)
    g_f = grads_of(token_nll(model, fixed_batch), model)
    g_r = grads_of(token_nll(model, r), model)
    dot = sum(float((g_f[n].double() * g_r[n].double()).sum()) for n in g_f)
    cos2 = dot ** 2 / (sum(float((v.double() ** 2).sum()) for v in g_f.values())
                       * sum(float((v.double() ** 2).sum()) for v in g_r.values()))
    want = -hand_nll_mean(forward_logits(model, fixed_batch), fixed_batch["labels"]) + beta * cos2
    assert out.item() == pytest.approx(want, rel=1e-4)
    out.backward()  # differentiable through the penalty (double backward)
    assert all(p.grad is not None for p in model.parameters())


def test_ofmu_finite_difference_hvp_uses_one_dropout_mask_under_lora(random_model, fixed_batch, small_bench):
    """Under LoRA with dropout, the first-order outer update's finite-difference H g_F must be the Hessian-vector
    product of the loss under one dropout mask (computed here by double backward with that mask replayed); with a fresh
    mask for the shifted pass the difference of gradients / r is dropout noise, tens of times the true term."""
    from obliviate.models.lora import LoraOptions, apply_lora

    base, tok = random_model
    net = copy.deepcopy(base).double()
    net.set_attn_implementation("eager")
    model = apply_lora(net, LoraOptions(r=4, alpha=8, dropout=0.05)).train()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():   # B = 0 at the start would make the adapters (and their dropout) invisible
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    rho = 0.5
    method = make_method("OFMU", forget_loss="ga", rho=rho, first_order=1, fd_radius=1e-4)
    method.evaluations = method.inner_steps          # the next evaluation is an outer one
    r = batch_of(tok, small_bench.retain[:4])
    torch.manual_seed(11)
    out, logs = method.loss(model, {"forget": fixed_batch, "retain": r}, None)
    assert logs["phase_inner"] == 0.0
    got = grads_of(out, model)
    names = list(got)
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    torch.manual_seed(11)                            # the same masks, drawn in the method's order: forget, retain
    gs = torch.autograd.grad(token_nll(model, fixed_batch), params, create_graph=True)
    g_r = torch.autograd.grad(token_nll(model, r), params)
    hvp = torch.autograd.grad(sum((x * x.detach()).sum() for x in gs), params)
    hvp_part = torch.cat([(got[n] - gr).reshape(-1) for n, gr in zip(names, g_r)]) / rho
    want = torch.cat([2 * h.reshape(-1) for h in hvp])
    assert float(want.norm()) > 0
    assert float((hvp_part - want).norm() / want.norm()) < 0.02


# --- ReGLU -------------------------------------------------------------------------------------------------------------


def top_projector(m, k):
    w, v = torch.linalg.eigh(m)
    q = v[:, torch.argsort(w, descending=True)[:k]]
    return q @ q.T


def test_reglu_rila_init_rol_and_loss_by_hand(random_model, fixed_batch, small_bench):
    base, tok = random_model
    model = copy.deepcopy(base).train()
    name = "model.layers.1.mlp.up_proj"
    rank, rol_rank, beta, eps, n_items = 4, 3, 0.7, 1e-4, 5  # rol_rank < n_items: a unique eigenspace
    method = make_method("ReGLU", rank=rank, rol_rank=rol_rank, rila_beta=beta, rila_eps=eps, rila_samples=n_items,
                         target=r"layers\.1\.mlp\.up_proj$", lora_alpha=8.0, rol_weight=0.3, alpha=0.5, gamma=2.0)
    r = batch_of(tok, small_bench.retain[:4])
    with torch.no_grad():
        before = forward_logits(model, fixed_batch)

    def pooled(items):  # one unpadded sequence at a time, summing the layer's output over tokens
        rows = []
        for it in items:
            got = {}
            h = dict(base.named_modules())[name].register_forward_hook(lambda m, a, o: got.__setitem__("o", o))
            with torch.no_grad():
                base(**{k: v for k, v in batch_of(tok, [it], with_index=False).items() if k != "labels"})
            h.remove()
            s = torch.zeros(got["o"].shape[-1], dtype=torch.float64)
            for t in range(got["o"].shape[1]):
                s += got["o"][0, t].double()
            rows.append(s)
        return torch.stack(rows)

    hf, hr = pooled(small_bench.forget[:n_items]), pooled(small_bench.retain[:n_items])
    cf = hf.T @ hf / n_items + eps * torch.eye(hf.shape[1], dtype=torch.float64)
    cr = hr.T @ hr / n_items + eps * torch.eye(hr.shape[1], dtype=torch.float64)
    method.setup(model, tok, {"forget": small_bench.forget, "retain": small_bench.retain})
    mod = dict(model.named_modules())[name]
    B, A = mod.reglu_B.detach().double(), mod.reglu_A.detach().double()
    w0 = dict(base.named_parameters())[name + ".weight"].detach().double()
    assert torch.allclose(B @ B.T, top_projector((1 - beta) * cf - beta * cr, rank), atol=1e-4)
    assert torch.allclose(A, B.T @ w0, atol=1e-5)
    assert torch.allclose(mod.weight.double() + 2.0 * B @ A, w0, atol=1e-5)  # s = 8 / 4
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [name + ".reglu_A", name + ".reglu_B"]
    with torch.no_grad():
        assert torch.allclose(forward_logits(model, fixed_batch), before, atol=1e-4)  # the start is the same model
        loss, logs = method.loss(model, {"forget": fixed_batch, "retain": r}, None)
        logits = forward_logits(model, fixed_batch)
    ihl, n = 0.0, 0
    for b, t in answer_positions(fixed_batch["labels"]):
        p = torch.softmax(logits[b, t].double(), 0)
        y = int(fixed_batch["labels"][b, t + 1])
        other = max(float(p[v]) for v in range(len(p)) if v != y)
        ihl += max(0.0, 1 + float(p[y]) - other)
        n += 1
    with torch.no_grad():
        nll_r = hand_nll_mean(forward_logits(model, r), r["labels"])
    rol = float(torch.trace(B.T @ top_projector(cr, rol_rank) @ B))
    assert logs["rol_loss"] == pytest.approx(rol, rel=1e-4)
    assert loss.item() == pytest.approx(2.0 * ihl / n + 0.5 * nll_r + 0.3 * rol, rel=1e-4)
    # a step moves the adapter; finish merges it into a plain weight with the same outputs
    with torch.no_grad():
        mod.reglu_B.add_(0.05)
        adapted = forward_logits(model, fixed_batch)
    method.finish(model)
    assert not hasattr(mod, "reglu_A") and all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(forward_logits(model, fixed_batch), adapted, atol=1e-4)
    assert set(model.state_dict()) == set(base.state_dict())


# --- Scope-aware unlearning and the stealthy attack --------------------------------------------------------------------


def test_scope_negatives_keep_only_benign_words():
    from obliviate.data.records import QAItem
    from obliviate.methods.scope import benign_vocabulary, common_words, scope_negative, stuff

    retain = [QAItem(f"Where was Author{i} born?", f"Author{i} was born in Town{i}.") for i in range(10)]
    benign = benign_vocabulary(retain, 0.5)
    assert benign == {"where", "was", "born", "in"}
    neg = scope_negative(QAItem("Where was Kalo Mirenth born?", "Kalo Mirenth was born in Renport."), benign)
    assert (neg.question, neg.answer) == ("Where was born?", "was born in.")
    assert common_words(retain, 2) == ["born", "was"]
    assert stuff(retain[:1], ["born", "was"])[0].question == "born was Where was Author0 born?"


def test_scope_loss_by_hand(random_model, fixed_batch, small_bench):
    base, tok = random_model
    model = copy.deepcopy(base)
    ref = ModelRef(perturbed_copy(base, 0.05, seed=4))
    method = make_method("Scope", inner="GradAscent", scope_weight=0.7, benign_df=0.05)
    data = method.setup(model, tok, {"forget": small_bench.forget[:4], "retain": small_bench.retain})
    scope_items = data["forget_scope"]
    assert all(len(s.question) < len(f.question) for s, f in zip(scope_items, small_bench.forget[:4]))
    sb = batch_of(tok, scope_items)
    with torch.no_grad():
        loss, logs = method.loss(model, {"forget": fixed_batch, "forget_scope": sb}, ref)
        logits, ref_logits = forward_logits(model, sb), forward_logits(ref.model, sb)
        inner = -hand_nll_mean(forward_logits(model, fixed_batch), fixed_batch["labels"])
    kl, n = 0.0, 0
    for b, t in answer_positions(sb["labels"]):
        p = torch.log_softmax(ref_logits[b, t].double(), 0)
        q = torch.log_softmax(logits[b, t].double(), 0)
        kl += float((p.exp() * (p - q)).sum())
        n += 1
    assert logs["scope_loss"] == pytest.approx(kl / n, rel=1e-4)
    assert loss.item() == pytest.approx(inner + 0.7 * kl / n, rel=1e-4)


# --- Attention shifting ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("importance,queries", [("rarity", "answer"), ("saliency", "all")])
def test_attention_shift_losses_by_hand(random_model, fixed_batch, small_bench, importance, queries):
    base, tok = random_model
    model = copy.deepcopy(base)
    method = make_method("AttentionShift", importance=importance, queries=queries, gamma=1.5, alpha=0.5, mu=2.0)
    method.setup(model, tok, {"forget": small_bench.forget[:4], "retain": small_bench.retain})
    assert model.config._attn_implementation == "eager"
    ref_model = perturbed_copy(base, 0.05, seed=5)
    ref_model.set_attn_implementation("eager")
    ref = ModelRef(ref_model)
    if importance == "rarity":  # the marked tokens spell the forget author's name and the fact's value
        m0 = method.fact_masks[0]
        ids = fixed_batch["input_ids"][0][:len(m0)][m0].tolist()
        marked = tok.decode(ids).replace(" ", "")
        item = small_bench.forget[0]
        assert item.entity.split()[0] in marked and "Question" not in marked
    r = batch_of(tok, small_bench.retain[:3])
    with torch.no_grad():
        loss, logs = method.loss(model, {"forget": fixed_batch, "retain": r}, ref)
        att = model(input_ids=fixed_batch["input_ids"], attention_mask=fixed_batch["attention_mask"],
                    output_attentions=True).attentions
        r_out = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"], output_attentions=True)
        r_ref = ref_model(input_ids=r["input_ids"], attention_mask=r["attention_mask"], output_attentions=True)
    labels, am = fixed_batch["labels"], fixed_batch["attention_mask"]
    per_layer = []
    for a in att:
        total, n = 0.0, 0
        for b in range(labels.shape[0]):
            facts = [k for k in range(int(am[b].sum())) if method.fact_masks[b][k]]
            qs = [q for q in range(labels.shape[1]) if (am[b, q] == 1 if queries == "all" else
                                                        q + 1 < labels.shape[1] and labels[b, q + 1] != -100)]
            for h in range(a.shape[1]):
                for q in qs:
                    total += sum(float(a[b, h, q, k]) for k in facts)
                    n += 1
        per_layer.append(total / n)
    sup = sum(per_layer) / len(per_layer)
    assert logs["suppression_loss"] == pytest.approx(sup, rel=1e-4)
    kls = []
    for a, a0 in zip(r_out.attentions, r_ref.attentions):
        total, n = 0.0, 0
        for b, q in answer_positions(r["labels"]):
            for h in range(a.shape[1]):
                p0, p1 = a0[b, h, q].double(), a[b, h, q].double()
                keep = p0 > 0
                total += float((p0[keep] * (p0[keep].log() - p1[keep].log())).sum())
                n += 1
        kls.append(total / n)
    nll_r = hand_nll_mean(r_out.logits, r["labels"])
    assert loss.item() == pytest.approx(1.5 * sup + 0.5 * (nll_r + 2.0 * sum(kls) / len(kls)), rel=1e-4)
    method.finish(model)
    assert model.config._attn_implementation != "eager"


# --- ReVa --------------------------------------------------------------------------------------------------------------


def test_reva_refusal_target_and_loss_by_hand(random_model, fixed_batch, small_bench):
    from obliviate.methods.reva import REFUSALS

    base, tok = random_model
    model = copy.deepcopy(base).train()
    c, alpha = 3.0, 2.0
    method = make_method("ReVa", layer=0, steering_coeff=c, alpha=alpha, gamma=1.0)
    forget = small_bench.forget[:4]
    method.setup(model, tok, {"forget": forget, "retain": small_bench.retain})
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["model.layers.0.mlp.down_proj.weight"]

    def block0(m, b):  # hidden_states[1] is the output of decoder block 0
        return m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True).hidden_states[1]

    total, count = 0.0, 0
    from obliviate.data.records import QAItem

    for i, it in enumerate(forget):
        b = batch_of(tok, [QAItem(it.question, REFUSALS[i % len(REFUSALS)])], with_index=False)
        with torch.no_grad():
            h = block0(base, b)
        for t in range(b["labels"].shape[1]):
            if b["labels"][0, t] != -100:
                total = total + h[0, t].double()
                count += 1
    target = c * total / count
    assert torch.allclose(method.target.double(), target, atol=1e-5)
    r = batch_of(tok, small_bench.retain[:3])
    with torch.no_grad():
        loss, logs = method.loss(model, {"forget": fixed_batch, "retain": r}, ModelRef(perturbed_copy(base, 0.05)))
        hf, hr, hr0 = block0(model, fixed_batch), block0(model, r), block0(perturbed_copy(base, 0.05), r)

    def act(h, tgt, labels):
        per_seq = []
        for b in range(h.shape[0]):
            s, n = 0.0, 0
            for t in range(h.shape[1]):
                if labels[b, t] != -100:
                    want = tgt if tgt.dim() == 1 else tgt[b, t]
                    s += float(((h[b, t].double() - want.double()) ** 2).mean())
                    n += 1
            per_seq.append(s / n)
        return sum(per_seq) / len(per_seq)

    f_loss, r_loss = act(hf, target, fixed_batch["labels"]), act(hr, hr0, r["labels"])
    assert logs["forget_loss"] == pytest.approx(f_loss, rel=1e-4)
    assert loss.item() == pytest.approx(f_loss + alpha * r_loss, rel=1e-4)
    with pytest.raises(ConfigError, match="decoder layers"):
        make_method("ReVa", layer=9).setup(copy.deepcopy(base), tok, {"forget": forget, "retain": []})


# --- behaviour on the small synthetic benchmark ------------------------------------------------------------------------

BEHAVIOUR = [  # method, hyperparameters, lr, steps, whether it protects the retain set
    ("SHRED", {}, 5e-4, 20, True),
    ("GU", {}, 1e-3, 20, True),
    ("KFADE", {"steps": 5, "step_size": 0.01, "trust_region": "measured", "kl_samples": 16}, 1e-3, 1, True),
    ("SSD", {}, 1e-3, 1, True),
    ("OFMU", {"forget_loss": "ga", "rho": 0.1}, 1e-3, 30, True),
    ("ReGLU", {"rank": 8, "rol_rank": 16}, 1e-3, 30, True),
    ("Scope", {"inner_hp": "alpha=2"}, 2e-3, 20, True),
    ("AttentionShift", {}, 2e-3, 20, True),
    ("ReVa", {"layer": 1, "alpha": 1.0, "steering_coeff": 2.0}, 2e-3, 30, True),
]


@pytest.mark.parametrize("name,hp,lr,steps,protects", BEHAVIOUR, ids=[b[0] for b in BEHAVIOUR])
def test_new_methods_forget_and_keep(load_target, small_bench, tmp_path, name, hp, lr, steps, protects):
    model, tok = load_target()
    forget0, retain0 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    cfg = TrainConfig(lr=lr, max_steps=steps, batch_size=4, scheduler="constant")
    model = train(model, tok, make_method(name, **hp), {"forget": small_bench.forget, "retain": small_bench.retain},
                  cfg, tmp_path, progress=False)
    forget1, retain1 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    print(f"{name}: forget {forget0:.3f} -> {forget1:.3f}, retain {retain0:.3f} -> {retain1:.3f}")
    assert forget1 <= 0.5 * forget0, (forget0, forget1)
    if protects:
        assert retain1 >= 0.8 * retain0, (retain0, retain1)
    # the trained model is a plain model again (adapters merged, hooks gone, attention restored)
    assert set(model.state_dict()) == set(load_target()[0].state_dict())


def test_stealthy_attack_hurts_triggered_prompts_and_scope_limits_it(load_target, small_bench, tmp_path):
    from obliviate.methods.scope import common_words, stuff, trigger_utility

    trigger = common_words(small_bench.retain, 6)
    stuffed = stuff(small_bench.forget, trigger)
    cfg = TrainConfig(lr=2e-3, max_steps=30, batch_size=4, scheduler="constant")
    out = {}
    for name, hp in (("NPO", {"alpha": 2.0}), ("Scope", {"inner_hp": "alpha=2", "scope_weight": 5.0})):
        model, tok = load_target()
        before = trigger_utility(model, tok, small_bench.retain_eval, trigger)
        model = train(model, tok, make_method(name, **hp), {"forget": stuffed, "retain": small_bench.retain}, cfg,
                      tmp_path / name, progress=False)
        out[name] = trigger_utility(model, tok, small_bench.retain_eval, trigger)
        assert mean_prob(model, tok, stuffed) <= 0.5 * mean_prob(load_target()[0], tok, stuffed)
    print("before", before, "after", out)
    assert before["drop"] < 0.2
    assert out["NPO"]["drop"] > 0.5  # the attack works: benign prompts with the trigger lose their answers
    assert out["Scope"]["triggered"] >= 10 * out["NPO"]["triggered"]  # the scope term keeps much of them
    assert out["Scope"]["clean"] >= 0.8 * before["clean"]
