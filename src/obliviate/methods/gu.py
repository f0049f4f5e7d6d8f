"""GU: geometric-disentanglement unlearning, a wrapper that keeps any forget update out of the retain gradients' span.

Zhou, Zhang, ..., Ji, H. Zhang 2025, arXiv 2511.17100; official code ``Lemutisme/geo-unlearning``
(``src/trainer/unlearn/geometric.py``, ``gradient_surgery.py``). To first order, a step Delta leaves the retain loss
unchanged iff Delta is orthogonal to the retain gradients, so the forget gradient is split into its part in their span
(tangential) and the rest (normal), and only the normal part is executed:

    g_f   = grad(gamma * L_f)       L_f = the ``inner`` method's loss with its own retain term off (alpha = 0)
    g_r   = grad(L_r)               L_r = KL(pi_ref || pi_theta) (``retain_loss="kl"``) or NLL on the retain batch
    U     = the last ``basis_size`` retain gradients (``refresh="fifo"``), or the first ones (``"freeze"``, the code's
            behaviour: the basis goes stale once full)
    g     = (I - P_U) g_f  +  alpha * inject_tangent * P_U g_r          P_U = orthogonal projector onto span(U)

``mode="per_tensor"`` projects each parameter tensor on the slices of U in it (the code's ``optimizer_step``);
``"global"`` projects the whole parameter vector (the paper's statement; per-tensor projection is not the same thing).
``rule="conflict"`` projects only when <g_f, g_r> < 0 (PCGrad) instead of always. The projection is computed in float64
through the Gram matrix of U (pseudo-inverse, so dependent basis vectors are harmless).

The engine back-propagates whatever ``loss`` returns, so ``loss`` computes g_f and g_r with ``torch.autograd.grad``
and returns a surrogate whose value is gamma L_f + alpha L_r and whose gradient is g: no engine hook is needed, and
gradient accumulation and clipping act on g. ``last_layers`` > 0 trains only the last blocks plus the final norm and
output head (the code's ``auto_last_k_layers`` 5 with ``freeze_others``); 0 trains everything.

Pitfalls: with Adam (beta1 > 0) the applied step is not the projected gradient (the paper's optimizer-geometry result
needs the metric matched to the optimizer; not implemented); the KL retain gradient is exactly 0 at theta_0, so with
``retain_loss="kl"`` the basis only starts filling once the model has moved; the basis is not checkpointed (a resumed
run rebuilds it). Cost: one inner forward/backward, one retain forward/backward (+ a reference forward for KL), and
``basis_size`` copies of the trainable parameters. Defaults (code): NPO inner, gamma 1, alpha 1, KL retain, k 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, register
from .losses import gradient_surrogate, retain_loss
from .shared import freeze_all_but_last, make_inner, max_reference


def project_out(grads: list[torch.Tensor], basis: list[torch.Tensor], mode: str, rtol: float = 1e-10
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(normal, tangential) parts of ``grads`` with respect to the span of the basis, computed in float64.

    ``basis[i]`` is a (k, numel) matrix: row j is basis vector j's slice in tensor i. ``mode`` "global" projects the
    concatenated vector; "per_tensor" projects every tensor on its own slices.
    """
    if not basis or basis[0].shape[0] == 0:
        return [g.clone() for g in grads], [torch.zeros_like(g) for g in grads]

    def coefficients(gram, b):
        w, v = torch.linalg.eigh(gram)
        keep = w > rtol * w.max().clamp(min=1e-300)
        inv = torch.where(keep, 1.0 / w.clamp(min=1e-300), torch.zeros_like(w))
        return v @ (inv * (v.T @ b))

    flat = [g.reshape(-1).double() for g in grads]
    us = [u.double() for u in basis]
    if mode == "global":
        gram = sum(u @ u.T for u in us)
        c = coefficients(gram, sum(u @ g for u, g in zip(us, flat)))
        tang = [c @ u for u in us]
    else:
        tang = [coefficients(u @ u.T, u @ g) @ u for u, g in zip(us, flat)]
    normal = [(g - t).reshape(orig.shape).to(orig.dtype) for g, t, orig in zip(flat, tang, grads)]
    tangential = [t.reshape(orig.shape).to(orig.dtype) for t, orig in zip(tang, grads)]
    return normal, tangential


@register("GU")
@dataclass
class GU(Method):
    inner: str = "NPO"
    inner_hp: str = ""
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "kl"
    basis_size: int = 8
    refresh: str = "fifo"
    mode: str = "per_tensor"
    rule: str = "always"
    inject_tangent: int = 1
    last_layers: int = 5

    uses_retain = True
    whole_model = "its projection of the whole parameter vector onto the retain gradients"
    bounds = {"gamma": (0, None), "alpha": (0, None), "basis_size": (1, None), "inject_tangent": (0, 1),
              "last_layers": (0, None)}
    choices = {"retain_loss": ("kl", "nll"), "refresh": ("fifo", "freeze"), "mode": ("per_tensor", "global"),
               "rule": ("always", "conflict")}

    def __post_init__(self):
        self._inner = make_inner("GU", self.inner, self.inner_hp)
        self.reference_streams = self._inner.reference_streams
        self._basis: list[torch.Tensor] = []

    def needs_reference(self):
        return max_reference(self._inner.needs_reference(), "model" if self.retain_loss == "kl" else "none")

    def setup(self, model, tokenizer, data):
        data = self._inner.setup(model, tokenizer, data)
        if self.last_layers:
            freeze_all_but_last(model, self.last_layers)
        return data

    def update_basis(self, g_r: list[torch.Tensor]) -> bool:
        """Add the retain gradient to the basis (dropping the oldest when full, or not at all when frozen)."""
        if sum(float(g.double().square().sum()) for g in g_r) == 0.0:
            return False
        if self._basis and self._basis[0].shape[0] >= self.basis_size:
            if self.refresh == "freeze":
                return False
            self._basis = [u[1:] for u in self._basis]
        rows = [g.detach().reshape(1, -1).float() for g in g_r]
        self._basis = [torch.cat([u, r]) for u, r in zip(self._basis, rows)] if self._basis else rows
        return True

    def directions(self, g_f: list[torch.Tensor], g_r: list[torch.Tensor]) -> list[torch.Tensor]:
        """The update: the normal part of g_f (all of it where ``rule`` says not to project) plus alpha * P_U g_r."""
        normal, _ = project_out(g_f, self._basis, self.mode)
        if self.rule == "conflict":
            if self.mode == "global":
                conflict = sum(float((a.double() * b.double()).sum()) for a, b in zip(g_f, g_r)) < 0
                normal = normal if conflict else [g.clone() for g in g_f]
            else:
                normal = [n if float((a.double() * b.double()).sum()) < 0 else a.clone()
                          for n, a, b in zip(normal, g_f, g_r)]
        if self.inject_tangent and self.alpha:
            _, tangent = project_out(g_r, self._basis, self.mode)
            normal = [n + self.alpha * t for n, t in zip(normal, tangent)]
        return normal

    def loss(self, model, batch, ref):
        params = [p for p in model.parameters() if p.requires_grad]
        lf, inner_logs = self._inner.loss(model, batch, ref)
        g_f = [g if g is not None else torch.zeros_like(p)
               for g, p in zip(torch.autograd.grad(self.gamma * lf, params, allow_unused=True), params)]
        lr = retain_loss(self.retain_loss, model, batch["retain"], ref)
        g_r = [g if g is not None else torch.zeros_like(p)
               for g, p in zip(torch.autograd.grad(lr, params, allow_unused=True), params)]
        self.update_basis(g_r)
        d = self.directions(g_f, g_r)
        with torch.no_grad():
            nf = sum(float(g.double().square().sum()) for g in g_f) ** 0.5
            nr = sum(float(g.double().square().sum()) for g in g_r) ** 0.5
            dot = sum(float((a.double() * b.double()).sum()) for a, b in zip(g_f, g_r))
            normal, _ = project_out(g_f, self._basis, self.mode)
            kept = sum(float(g.double().square().sum()) for g in normal) ** 0.5
        logs = {"forget_loss": lf.item(), "retain_loss": lr.item(), "cos_forget_retain": dot / max(nf * nr, 1e-30),
                "forget_grad_kept": kept / max(nf, 1e-30), "basis_vectors": float(self._basis[0].shape[0])
                if self._basis else 0.0}
        logs.update({f"inner_{k}": v for k, v in inner_logs.items() if k not in ("forget_loss", "retain_loss")})
        return gradient_surrogate(params, d, (self.gamma * lf + self.alpha * lr).detach()), logs
