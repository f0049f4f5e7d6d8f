"""K-FADE: a few uphill Gauss-Newton steps on the forget loss, with K-FAC curvature measured on retain data.

McKinney, Thudi, Bae, Rezaei, Papernot, McIlraith, Grosse 2026, "Gauss-Newton Unlearning for the LLM Era",
arXiv 2602.10568. No public code: what follows is *derived* from the abstract and standard GN/K-FAC, and every uncertain
choice is a hyperparameter.

The retain constraint E_{x ~ D_r} KL(pi_theta0 || pi_theta0+Delta) <= eps, linearised, is 1/2 Delta^T G_r Delta <= eps
(G_r = the Fisher/GGN on retain data). Maximising the linearised forget NLL under it gives, per step,

    Delta = eta * (G_r + lambda I)^-1 grad L_f,      eta = sqrt(2 eps / grad L_f^T (G_r + lambda I)^-1 grad L_f)

with ``step_size`` = eps (the predicted retain KL per step) and L_f the token-mean NLL of the whole forget set
(re-evaluated at every one of ``steps`` steps; G_r stays the one measured at theta_0).

G_r per linear layer (W: out x in) is K-FAC, A (x) S: A = E[a a^T] over the layer's inputs, S = E[g g^T] over the
gradients at its outputs, both averaged over the non-padding tokens of the retain items (each token is one sample).
g comes from back-propagating sum_t -log p(y_t) with y_t drawn from the model's own predictions (``fisher_labels=
"sampled"``, the true Fisher = GGN for softmax cross-entropy) or the data's answer tokens (``"empirical"``), at the
positions predicting answer tokens (``positions="answer"``) or every position (``"all"``).
``curvature="ekfac"`` keeps K-FAC's eigenvectors (A = Q_A L_A Q_A^T, S = Q_S L_S Q_S^T) and refits the eigenvalues:
Lambda_ij = E_t[(Q_S^T g_t)_i^2 (Q_A^T a_t)_j^2] (a second pass over the same tokens and labels). The step per layer is
Q_S [(Q_S^T grad_W Q_A) / (Lambda + lambda)] Q_A^T with Lambda = L_S L_A^T for K-FAC. ``damping`` is relative: lambda =
damping * mean(Lambda) of the layer (an absolute damping would not transfer between model sizes).

Only ``nn.Linear`` layers are edited (``target``: a regex on module names; "" = every Linear but the output head,
which a tied model shares with the input embeddings). The factors and eigendecompositions are computed once per (model
weights, retain data, settings) and cached on disk under the obliviate cache (``kfade/``), so a grid over
``step_size``, ``damping`` or ``steps`` pays for them once. ``retain_samples`` caps the retain items used (0 = all).
Training-free in the engine's sense (``trains = False``): ``apply`` edits the weights and logs one line per step to
``metrics.jsonl`` (forget NLL, eta, the damped quadratic grad^T (G + lambda I)^-1 grad).

``trust_region="quadratic"`` is the derivation above. On a model that predicts its retain data confidently (a tiny
model that memorised it), the quadratic model of the KL is far too optimistic along the low-curvature directions the
preconditioner favours (measured here: the true KL of the step was ~1000x the predicted one) and a single step
destroys the model; ``"measured"`` keeps the direction but halves eta until the *measured* KL(pi_before || pi_after) on
``kl_samples`` retain items is at most ``step_size`` (starting from min(quadratic eta, 2 x the last accepted eta)).
That is our addition, not the paper's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..cache import cache_root
from ..data.collate import item_batches
from ..io import append_jsonl
from ..logprobs import forward_logits, nll_mean, shift, token_logprobs
from .base import Method, register
from .shared import linear_modules


class _Capture:
    """Forward hooks that keep each layer's input and, after backward, the gradient at its output."""

    def __init__(self, modules: dict[str, torch.nn.Linear]):
        self.inputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name):
        def hook(module, args, out):
            self.inputs[name] = args[0].detach()
            if out.requires_grad:
                out.register_hook(lambda g: self.grads.__setitem__(name, g.detach()))
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def fisher_labels(logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor, kind: str, positions: str,
                  generator: torch.Generator) -> torch.Tensor:
    """Labels (B, T) for the Fisher pass: -100 where no loss is taken; sampled from the model or the data's own."""
    lg, lb, mask = shift(logits, labels)
    if positions == "all":
        mask = attention_mask[:, 1:].bool()
    if kind == "sampled":
        probs = torch.softmax(lg.detach().float(), -1)
        drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator)
        lb = drawn.reshape(lb.shape).to(lb.device)
    out = torch.full_like(labels, -100)
    out[:, 1:] = torch.where(mask, lb, torch.full_like(lb, -100))
    return out


def _fisher_passes(model, tokenizer, items, modules, kind, positions, seed, batch_size, visit):
    """Run the Fisher backward pass over ``items``; call ``visit(name, a (N, in), g (N, out))`` per layer and batch."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    cap = _Capture(modules)
    try:
        for b in item_batches(tokenizer, items, batch_size, device):
            logits = forward_logits(model, b)
            y = fisher_labels(logits, b["labels"], b["attention_mask"], kind, positions, gen)
            logp, mask = token_logprobs(logits, y)
            if not mask.any():
                continue
            (-logp.sum()).backward()
            tok = b["attention_mask"].bool()
            for name in modules:
                visit(name, cap.inputs[name][tok].double(), cap.grads[name][tok].double())
            model.zero_grad(set_to_none=True)
    finally:
        cap.remove()


def kfac_factors(model, tokenizer, items, modules: dict[str, torch.nn.Linear], kind: str = "sampled",
                 positions: str = "answer", seed: int = 0, ekfac: bool = True, batch_size: int = 8
                 ) -> dict[str, dict[str, torch.Tensor]]:
    """Per layer: A, S (token means, float64), their eigenvectors Q_A, Q_S and the eigenvalue grid Lambda (out x in)."""
    was_training = model.training
    model.eval()
    req = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():  # gradients are needed only at the layer outputs
        p.requires_grad_(False)
    model.get_input_embeddings().weight.requires_grad_(True)
    sums = {n: {"A": 0.0, "S": 0.0, "n": 0} for n in modules}

    def moments(name, a, g):
        s = sums[name]
        s["A"] = s["A"] + a.T @ a
        s["S"] = s["S"] + g.T @ g
        s["n"] += a.shape[0]

    try:
        _fisher_passes(model, tokenizer, items, modules, kind, positions, seed, batch_size, moments)
        out = {}
        for name, s in sums.items():
            A, S = s["A"] / max(s["n"], 1), s["S"] / max(s["n"], 1)
            la, qa = torch.linalg.eigh(A)
            ls, qs = torch.linalg.eigh(S)
            out[name] = {"A": A, "S": S, "QA": qa, "QS": qs, "Lambda": ls.clamp(min=0)[:, None] * la.clamp(min=0)[None, :]}
        if ekfac:
            fits = {n: torch.zeros_like(out[n]["Lambda"]) for n in modules}

            def refit(name, a, g):
                fits[name] += (g @ out[name]["QS"]).square().T @ (a @ out[name]["QA"]).square()

            _fisher_passes(model, tokenizer, items, modules, kind, positions, seed, batch_size, refit)
            for name in modules:
                out[name]["Lambda"] = fits[name] / max(sums[name]["n"], 1)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(req[n])
        model.train(was_training)
    return out


def precondition(grad: torch.Tensor, f: dict[str, torch.Tensor], damping: float) -> tuple[torch.Tensor, float]:
    """((G + lambda I)^-1 grad for one layer, grad^T (G + lambda I)^-1 grad), lambda = damping * mean(Lambda)."""
    lam = damping * float(f["Lambda"].mean())
    v = f["QS"].T @ grad.double() @ f["QA"]
    v = v / (f["Lambda"] + lam).clamp(min=1e-300)
    delta = f["QS"] @ v @ f["QA"].T
    return delta, float((grad.double() * delta).sum())


def forget_gradient(model, tokenizer, items, params: dict[str, torch.Tensor], batch_size: int
                    ) -> tuple[dict[str, torch.Tensor], float]:
    """Gradient of the token-mean answer NLL over all ``items`` (batches weighted by their token counts)."""
    device = next(model.parameters()).device
    batches = list(item_batches(tokenizer, items, batch_size, device))
    total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    grads = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    loss = 0.0
    for b in batches:
        n_tok = int((b["labels"][:, 1:] != -100).sum())
        nll = nll_mean(forward_logits(model, b), b["labels"]) * (n_tok / max(total, 1))
        for (n, _), g in zip(params.items(), torch.autograd.grad(nll, list(params.values()))):
            grads[n] += g.double()
        loss += nll.item()
    return grads, loss


@torch.no_grad()
def step_kl(model, tokenizer, items, params, deltas, eta: float, batch_size: int) -> float:
    """Mean KL(pi_now || pi_after) over the answer positions of ``items`` for the step eta * deltas (then undone)."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    saved = {n: p.detach().clone() for n, p in params.items()}
    for b in item_batches(tokenizer, items, batch_size, device):
        before = torch.log_softmax(forward_logits(model, b).float(), -1)
        for n, p in params.items():
            p.add_((eta * deltas[n]).to(p.dtype))
        after = torch.log_softmax(forward_logits(model, b).float(), -1)
        for n, p in params.items():
            p.copy_(saved[n])
        mask = b["labels"][:, 1:] != -100
        kl = (before.exp() * (before - after)).sum(-1)[:, :-1][mask]
        total += float(kl.sum())
        count += int(mask.sum())
    return total / max(count, 1)


def measured_step(model, tokenizer, items, params, deltas, eta: float, eps: float, batch_size: int,
                  max_halvings: int = 30) -> tuple[float, float]:
    """Halve eta until the measured retain KL of the step is at most eps; returns (eta, its KL)."""
    kl = step_kl(model, tokenizer, items, params, deltas, eta, batch_size)
    for _ in range(max_halvings):
        if kl <= eps:
            break
        eta /= 2
        kl = step_kl(model, tokenizer, items, params, deltas, eta, batch_size)
    return eta, kl


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@register("KFADE")
@dataclass
class KFADE(Method):
    steps: int = 3
    step_size: float = 0.05
    damping: float = 0.1
    curvature: str = "ekfac"
    fisher_labels: str = "sampled"
    positions: str = "answer"
    target: str = ""
    retain_samples: int = 256
    trust_region: str = "quadratic"
    kl_samples: int = 64
    seed: int = 0

    trains = False
    uses_retain = True
    needs_qa = "question-answer items (its curvature is taken at the answer tokens)"
    whole_model = "its Kronecker curvature factors of every layer"
    bounds = {"steps": (1, None), "step_size": (0, None), "damping": (1e-12, None), "retain_samples": (0, None),
              "kl_samples": (1, None)}
    choices = {"curvature": ("kfac", "ekfac"), "fisher_labels": ("sampled", "empirical"), "positions": ("answer", "all"),
               "trust_region": ("quadratic", "measured")}

    def factors(self, model, tokenizer, retain, modules, batch_size: int) -> dict:
        """K-FAC factors of the retain Fisher, from the disk cache when this model, data and settings were seen."""
        from safetensors.torch import load_file, save_file

        from ..io import atomic_path

        items = retain[: self.retain_samples] if self.retain_samples else retain
        key = hashlib.sha256(repr((weights_digest(model), [(it.question, it.answer) for it in items], sorted(modules),
                                   self.curvature, self.fisher_labels, self.positions, self.seed, batch_size)
                                  ).encode()).hexdigest()[:16]
        path = cache_root() / "kfade" / f"{key}.safetensors"
        if path.exists():
            flat = load_file(str(path))
            out: dict[str, dict[str, torch.Tensor]] = {}
            for k, v in flat.items():
                layer, field = k.rsplit("/", 1)
                out.setdefault(layer, {})[field] = v
            return out
        out = kfac_factors(model, tokenizer, items, modules, self.fisher_labels, self.positions, self.seed,
                           self.curvature == "ekfac", batch_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({f"{n}/{k}": v.contiguous() for n, f in out.items() for k, v in f.items()}, str(tmp))
        return out

    def apply(self, model, tokenizer, data, cfg, run_dir):
        modules = linear_modules(model, self.target, "KFADE")
        fac = self.factors(model, tokenizer, data["retain"], modules, cfg.batch_size)
        params = {n: m.weight for n, m in modules.items()}
        metrics = Path(run_dir) / "metrics.jsonl"
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.unlink(missing_ok=True)
        kl_items = data["retain"][: self.kl_samples]
        was_training = model.training
        model.eval()
        req = {n: p.requires_grad for n, p in params.items()}
        for p in params.values():
            p.requires_grad_(True)
        last_eta = float("inf")
        try:
            for step in range(self.steps):
                with torch.enable_grad():
                    grads, nll = forget_gradient(model, tokenizer, data["forget"], params, cfg.batch_size)
                deltas, quad = {}, 0.0
                for n, g in grads.items():
                    deltas[n], q = precondition(g, {k: v.to(g.device) for k, v in fac[n].items()}, self.damping)
                    quad += q
                eta = (2 * self.step_size / quad) ** 0.5 if quad > 0 else 0.0
                record = {"step": step + 1, "forget_nll": round(nll, 6), "damped_quadratic": quad}
                if self.trust_region == "measured":  # start from twice the last accepted step: fewer halvings
                    eta, record["retain_kl"] = measured_step(model, tokenizer, kl_items, params, deltas,
                                                             min(eta, 2 * last_eta), self.step_size, cfg.batch_size)
                    last_eta = eta
                with torch.no_grad():
                    for n, p in params.items():
                        p.add_((eta * deltas[n]).to(p.dtype))  # uphill: the forget NLL increases
                append_jsonl(metrics, {**record, "eta": eta})
        finally:
            for n, p in params.items():
                p.requires_grad_(req[n])
            model.train(was_training)
