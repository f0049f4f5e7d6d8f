"""RMU: steer a layer's activations on forget data towards a random vector (Li et al. 2024, WMDP).

Representation Misdirection for Unlearning, "The WMDP Benchmark", arXiv 2403.03218.

    h^l(x)  = output of decoder block ``layer`` (activations at each token)
    u       ~ U[0,1)^d, normalised to unit norm, fixed per run (drawn from ``seed``)
    L_f     = rmu_act(h_theta^l(x_f), c * u)                               c = ``steering_coeff``
    L_r     = rmu_act(h_theta^l(x_r), h_theta0^l(x_r))                     (``retain_loss="embed_diff"``)
    L       = gamma * L_f + alpha * L_r
    rmu_act(a, b) = mean_batch [ sum_answer-tokens mean_d (a - b)^2 / #answer tokens ]

Only the parameters whose names match ``trainable`` (a regex, searched) are trained; ``setup`` sets
``requires_grad=False`` on every other parameter, so no gradient is even computed for them (the anchor re-enables
them after building its optimizer). The default selection is WMDP's: ``mlp.down_proj`` of blocks layer-2..layer.
Forward passes stop at the steered block. Defaults (WMDP code): layer 7, steering_coeff 20, alpha 100, gamma 1;
its lr is 5e-5. open-unlearning's RMU.yaml uses steering_coeff 2, alpha 1, all parameters: tune per model.
``retain_loss`` may also be ``nll``, ``kl`` or ``none``, as for every method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, RetainTerm, register
from .losses import KL_RETAIN_LOSSES, RETAIN_LOSSES, retain_loss, rmu_act_loss
from .shared import freeze_all_but, layer_activations, steering_pattern, trainable_regex


def control_vector(d: int, steering_coeff: float, seed: int) -> torch.Tensor:
    """c * u / |u| with u ~ U[0,1)^d drawn from ``seed``."""
    u = torch.rand(d, generator=torch.Generator().manual_seed(seed))
    return steering_coeff * u / u.norm()


@register("RMU")
@dataclass
class RMU(RetainTerm, Method):
    layer: int = 7
    steering_coeff: float = 20.0
    gamma: float = 1.0
    alpha: float = 100.0
    trainable: str = ""
    retain_loss: str = "embed_diff"
    seed: int = 0

    reference_streams = ()
    whole_model = "its activation hooks on a decoder layer"
    bounds = {"layer": (0, None), "steering_coeff": (0, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": ("embed_diff", *RETAIN_LOSSES)}

    def needs_reference(self):
        return "model" if self.uses_retain and self.retain_loss in ("embed_diff", *KL_RETAIN_LOSSES) else "none"

    def trainable_regex(self) -> str:
        return trainable_regex(self.layer, self.trainable)

    def setup(self, model, tokenizer, data):
        pattern = steering_pattern(model, self.name, self.layer, self.trainable_regex())
        self.selected = freeze_all_but(model, pattern, self.name, self.trainable_regex())
        return data

    def loss(self, model, batch, ref):
        f = batch["forget"]
        h = layer_activations(model, f, self.layer)
        target = control_vector(h.shape[-1], self.steering_coeff, self.seed).to(h.device)
        forget = rmu_act_loss(h, target, f["labels"] != -100)
        if not self.uses_retain:
            r = forget * 0
        elif self.retain_loss == "embed_diff":
            rb = batch["retain"]
            with torch.no_grad():
                h_ref = layer_activations(ref.model, rb, self.layer)
            r = rmu_act_loss(layer_activations(model, rb, self.layer), h_ref, rb["labels"] != -100)
        else:
            r = retain_loss(self.retain_loss, model, batch["retain"], ref)
        return self.gamma * forget + self.alpha * r, {"forget_loss": forget.item(), "retain_loss": r.item()}
