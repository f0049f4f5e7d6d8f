"""OFMU: bi-level unlearning, forgetting with a gradient-similarity penalty inside, retention with stationarity outside.

Asif & Amiri 2026 (ICLR), "OFMU: Optimization-driven Framework for Machine Unlearning", arXiv 2509.22483. No public
code; the objective below is *derived* from the abstract and a third-party summary, the uncertain parts being
hyperparameters.

    F(theta) = forget objective to maximise: -L_NPO (``forget_loss="npo"``, bounded) or the forget NLL (``"ga"``)
    S(theta) = similarity of grad F and grad L_r: cos^2 (``similarity="cos2"``) or the inner product (``"dot"``)
    inner  (maximise G = F - beta * S):     minimise  -F + beta * S              ``inner_steps`` evaluations
    outer  (retain at a stationary point):  minimise  L_r + rho_k * ||grad F||^2   one evaluation, rho_k = rho * growth^k

The phases alternate per loss evaluation (a micro-batch): ``inner_steps`` inner ones, then one outer one (use
grad_accum 1, or the phases mix inside an optimizer step). The stationarity penalty uses grad F rather than grad G
(dropping the beta * S term from it, which would need third derivatives): our simplification.

``first_order=0`` differentiates both penalties exactly (double backward: Hessian-vector products, about 2-3x the cost
of GradDiff). ``first_order=1`` avoids them: the inner direction treats the similarity coefficient as a constant,
    d_inner = -(g_F - beta * c * g_r),   c = <g_F, g_r> / ||g_r||^2 (detached),
which with beta = 1 is PCGrad (the step leaves L_r unchanged to first order), and the outer penalty's gradient
2 H_F g_F is a finite difference of gradients, (grad F(theta + r g_F/|g_F|) - grad F(theta)) * 2 |g_F| / r with
r = ``fd_radius``. Both passes of that difference replay one random state, so under dropout (LoRA's 0.05) they
use the same masks: with two masks the difference of the two gradients, divided by r = 1e-3, would be dropout noise
amplified a thousandfold rather than the curvature. Either way ``loss`` returns a surrogate whose value is the
phase's objective and whose gradient is the update (``losses.gradient_surrogate``) where the engine's backward would
not give it. The exact mode switches the model to eager attention for training (fused attention kernels lack double
backward) and back in ``finish``.
Retain loss L_r: NLL on the retain batch (or KL to the reference). Defaults are ours (the paper's are unknown):
beta 1, rho 0.01, growth 1, one inner step per outer step, NPO beta 0.1. With the NPO objective, whose gradient
vanishes once an item is forgotten, the stationarity penalty pulls the outer step towards *more* forgetting: on the
tiny benchmark rho 0.03 already halves retain probability, so keep rho small with "npo" ("ga" tolerates 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..logprobs import forward_logits, nll_mean, sequence_logprob
from .base import Method, register
from .losses import gradient_surrogate, npo_loss, retain_loss
from .shared import replayed, rng_state


def _grads(value, params, create_graph=False):
    gs = torch.autograd.grad(value, params, allow_unused=True, create_graph=create_graph, retain_graph=create_graph)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(gs, params)]


def _dot(a, b):
    return sum((x * y).sum() for x, y in zip(a, b))


@register("OFMU")
@dataclass
class OFMU(Method):
    forget_loss: str = "npo"
    npo_beta: float = 0.1
    beta: float = 1.0
    similarity: str = "cos2"
    rho: float = 0.01
    rho_growth: float = 1.0
    inner_steps: int = 1
    retain_loss: str = "nll"
    first_order: int = 1
    fd_radius: float = 1e-3

    uses_retain = True
    bounds = {"npo_beta": (1e-6, None), "beta": (0, None), "rho": (0, None), "rho_growth": (1, None),
              "inner_steps": (1, None), "first_order": (0, 1), "fd_radius": (1e-12, None)}
    choices = {"forget_loss": ("npo", "ga"), "similarity": ("cos2", "dot"), "retain_loss": ("nll", "kl")}

    def __post_init__(self):
        self.evaluations = 0

    def needs_reference(self):
        if self.retain_loss == "kl":
            return "model"
        return "logprobs" if self.forget_loss == "npo" else "none"

    @property
    def reference_streams(self):
        return ("forget",) if self.forget_loss == "npo" else ()

    def setup(self, model, tokenizer, data):
        # double backward through fused attention kernels is not implemented everywhere: the exact mode runs eager
        self._attn = getattr(model.config, "_attn_implementation", None)
        if not self.first_order and self._attn not in (None, "eager"):
            model.set_attn_implementation("eager")
        return data

    def finish(self, model):
        if getattr(self, "_attn", None) not in (None, "eager"):
            model.set_attn_implementation(self._attn)

    def phase(self) -> str:
        return "inner" if self.evaluations % (self.inner_steps + 1) < self.inner_steps else "outer"

    def rho_now(self) -> float:
        return self.rho * self.rho_growth ** (self.evaluations // (self.inner_steps + 1))

    def forget_objective(self, model, f, ref) -> torch.Tensor:
        """F, the quantity forgetting maximises."""
        logits = forward_logits(model, f)
        if self.forget_loss == "ga":
            return nll_mean(logits, f["labels"])
        logp, _ = sequence_logprob(logits, f["labels"])
        return -npo_loss(logp, ref.sequence_logprob("forget", f), self.npo_beta)

    def similarity_of(self, g_f, g_r):
        dot = _dot(g_f, g_r)
        if self.similarity == "dot":
            return dot
        return dot.square() / (_dot(g_f, g_f) * _dot(g_r, g_r)).clamp(min=1e-30)

    def loss(self, model, batch, ref):
        params = [p for p in model.parameters() if p.requires_grad]
        f, r = batch["forget"], batch["retain"]
        phase, rho = self.phase(), self.rho_now()
        self.evaluations += 1
        exact = not self.first_order
        rng = rng_state(f["input_ids"].device)   # the dropout masks of F's pass, replayed for the shifted pass
        F_ = self.forget_objective(model, f, ref)
        lr = retain_loss(self.retain_loss, model, r, ref)
        logs = {"forget_objective": F_.item(), "retain_loss": lr.item(), "phase_inner": float(phase == "inner"),
                "rho": rho}
        if phase == "inner":
            g_f = _grads(F_, params, create_graph=exact)
            g_r = _grads(lr, params, create_graph=exact)
            s = self.similarity_of(g_f, g_r)
            logs["similarity"] = s.item()
            if exact:
                return -F_ + self.beta * s, logs
            with torch.no_grad():
                c = _dot(g_f, g_r) / _dot(g_r, g_r).clamp(min=1e-30)
                d = [-(a - self.beta * c * b) for a, b in zip(g_f, g_r)]
            return gradient_surrogate(params, d, (-F_ + self.beta * s).detach()), logs
        # outer: retain loss plus the stationarity penalty of the forget objective
        if exact:
            g_f = _grads(F_, params, create_graph=True)
            pen = _dot(g_f, g_f)
            logs["stationarity"] = pen.item()
            return lr + rho * pen, logs
        g_f = _grads(F_, params)
        g_r = _grads(lr, params)
        with torch.no_grad():
            pen = _dot(g_f, g_f)
            norm = pen.sqrt()
        logs["stationarity"] = pen.item()
        hvp2 = [torch.zeros_like(p) for p in params]
        if norm > 0 and rho:
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, g in zip(params, g_f):
                    p.add_(g, alpha=self.fd_radius / float(norm))
            with replayed(rng):
                g_shift = _grads(self.forget_objective(model, f, ref), params)
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
                hvp2 = [2 * (a - b) * float(norm) / self.fd_radius for a, b in zip(g_shift, g_f)]
        d = [a + rho * h for a, h in zip(g_r, hvp2)]
        return gradient_surrogate(params, d, (lr + rho * pen).detach()), logs

    def state_dict(self):
        return {"ofmu_evaluations": self.evaluations}

    def load_state_dict(self, state):
        self.evaluations = int(state.get("ofmu_evaluations", 0))
