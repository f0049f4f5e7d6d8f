"""RLCP ("digital metabolism"): gradient reversal against a linear probe hides forget facts in deep layers.

Regenerative Logic-Core Protocol: the forget facts are made linearly undecodable from a deep layer by gradient reversal
against a linear probe, while a retain ("logic") stream keeps the rest.

Peng, Fang, Sun 2026, "Digital Metabolism: Decoupling Logic from Facts via Regenerative Unlearning", arXiv 2601.10810.
Only the abstract and summaries were available: the objective below is *derived* from "a dual-stream training framework
that renders specific factual dependencies linearly undecodable via deep-layer gradient reversal", and the uncertain
choices are hyperparameters.

A linear probe P (d -> V, ``probe_init="head"``: a copy of the output embedding, the strongest linear token decoder
known at the start; or ``"random"``) reads the hidden state h_t of decoder block ``layer`` (-1 = the last) at every
position t that predicts a forget answer token y_{t+1}. A gradient reversal layer R_lambda (identity forward,
-lambda x gradient backward; Ganin & Lempitsky 2015) sits between the model and the probe:

    CE_probe = mean_{t in answer positions of D_f} -log softmax(P R_lambda(h_t))[y_{t+1}]
    L        = gamma * CE_probe + alpha * L_retain(D_r)

One optimizer step therefore trains the probe to decode the forget answers (descent on CE_probe) and the model to make
them undecodable by it (ascent, scaled by ``reversal`` = lambda), while L_retain (``retain_loss``: NLL or KL to the
starting model) is the logic stream. The probe is attached to the model as ``rlcp_probe`` during training (so the
engine's optimizer and checkpoints carry it) and removed by ``finish``. Logs: ``probe_ce`` and ``probe_acc`` (the
co-trained probe's accuracy on the forget answer tokens of the batch). The decodability by a *fresh* probe, before and
after, is ``audit.probe_decodability``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES
from .shared import decoder_layers, layer_activations

PROBE = "rlcp_probe"


class GradReverse(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by -lambda in the backward pass."""

    @staticmethod
    def forward(ctx, x, lam: float):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    return GradReverse.apply(x, lam)


def answer_states(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states at the positions that predict an answer token (N, d), those answer tokens (N,))."""
    target = labels[:, 1:]
    keep = target != -100
    return hidden[:, :-1][keep], target[keep]


def resolve_layer(model, layer: int, method: str = "RLCP") -> int:
    n = len(decoder_layers(model))
    if not -n <= layer < n:
        raise ConfigError(f"method {method}: hyperparameter 'layer' = {layer} but the model has {n} decoder layers")
    return layer % n


@register("RLCP")
@dataclass
class RLCP(RetainTerm, Method):
    layer: int = -1
    reversal: float = 1.0
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"
    probe_init: str = "head"
    seed: int = 0

    whole_model = "its activation hook on a decoder layer and its probe attached to the model"
    bounds = {"reversal": (0, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES, "probe_init": ("head", "random")}

    def setup(self, model, tokenizer, data):
        resolve_layer(model, self.layer)
        head = model.get_output_embeddings()
        d, v = head.weight.shape[1], head.weight.shape[0]
        probe = torch.nn.Linear(d, v, bias=False).to(head.weight.device, torch.float32)
        with torch.no_grad():
            if self.probe_init == "head":
                probe.weight.copy_(head.weight.float())
            else:
                g = torch.Generator().manual_seed(self.seed)
                probe.weight.copy_((torch.randn(v, d, generator=g) / d ** 0.5).to(probe.weight.device))
        model.add_module(PROBE, probe)
        return data

    def probe_loss(self, model, batch: dict, probe: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE of the probe on the forget answer tokens through the reversal layer, its accuracy)."""
        hidden = layer_activations(model, batch, resolve_layer(model, self.layer))
        h, y = answer_states(hidden, batch["labels"])
        logits = probe(grad_reverse(h.float(), self.reversal))
        return F.cross_entropy(logits, y), (logits.argmax(-1) == y).float().mean()

    def loss(self, model, batch, ref):
        ce, acc = self.probe_loss(model, batch["forget"], getattr(model, PROBE))
        return self.with_retain(ce, model, batch, ref, probe_ce=ce.item(), probe_acc=acc.item())

    def finish(self, model):
        if hasattr(model, PROBE):
            delattr(model, PROBE)
