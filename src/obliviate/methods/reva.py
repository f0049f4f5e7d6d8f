"""ReVa: RMU-style representation steering towards a refusal direction instead of a random vector.

Gu, Du, Zhang, S. Liu 2026 (ACL), "Unlearners Can Lie: Evaluating and Improving Honesty in LLM Unlearning",
arXiv 2605.08765; official code ``OPTML-Group/ReVa`` (``src/train/reva/unlearn.py``).

    h^l(x)  = output of decoder block ``layer``
    r_l     = mean of h^l over the answer tokens of refusal sequences: each forget question answered with a refusal
              ("I don't know.", ...), computed once in ``setup`` with the starting model
              (``direction="diff"``: r_l minus the same mean over the true answers, a difference-in-means direction)
    target  = c * r_l (``normalize=0``), or c * r_l / |r_l| (``normalize=1``, RMU's scale convention); c = steering_coeff
    L       = gamma * act(h_theta^l(x_f), target) + alpha * act(h_theta^l(x_r), h_theta0^l(x_r))
    act(a, b) = mean_batch [ sum_answer-tokens mean_d (a - b)^2 / #answer tokens ]       (``losses.rmu_act_loss``)

As RMU, only ``mlp.down_proj`` of blocks layer-2..layer train (``trainable``: a regex to choose others) and forward
passes stop at the steered block. The paper extracts r_l from refusal-inducing / out-of-knowledge prompts and applies
ReVa to an RMU-unlearned model; with no such prompts in a forget/retain benchmark we build them from the forget questions
and a list of refusals (``refusals``: a file with one per line; "" = the short list below), and start from the target.
Defaults (ReVa/WMDP scripts): layer 7, alpha 100, gamma 1; c is not given in the summary, so c = 1 with the raw mean
(the forget activations are driven to the model's own refusal state). Self-contained: it shares no code with rmu.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.collate import item_batches
from ..data.records import QAItem
from ..errors import DataError
from .base import Method, register
from .losses import rmu_act_loss
from .shared import freeze_all_but, layer_activations, steering_pattern, trainable_regex

REFUSALS = ["I don't know.", "I'm not sure about that.", "I have no idea.", "I can't answer that.",
            "Sorry, I don't know the answer to that.", "That is something I don't know."]


def read_refusals(path: str) -> list[str]:
    if not path:
        return list(REFUSALS)
    try:
        lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    except (FileNotFoundError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the refusals file ({type(e).__name__})") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataError(f"{path}: no refusals in the file (expected one per line)")
    return lines


@torch.no_grad()
def mean_answer_activation(model, tokenizer, items: list[QAItem], layer: int, batch_size: int = 16) -> torch.Tensor:
    """Mean of block ``layer``'s output over the answer tokens (labels != -100) of ``items``, float32."""
    device = next(model.parameters()).device
    total, count = None, 0
    for b in item_batches(tokenizer, items, batch_size, device):
        h = layer_activations(model, b, layer).float()
        m = b["labels"] != -100
        part = h[m].sum(0)
        total = part if total is None else total + part
        count += int(m.sum())
    return total / max(count, 1)


@register("ReVa")
@dataclass
class ReVa(Method):
    layer: int = 7
    steering_coeff: float = 1.0
    normalize: int = 0
    direction: str = "refusal"
    refusals: str = ""
    gamma: float = 1.0
    alpha: float = 100.0
    trainable: str = ""

    uses_retain = True
    reference = "model"
    reference_streams = ()
    needs_qa = "question-answer items (refusal vectors come from the forget questions)"
    whole_model = "its activation hooks and refusal vectors"
    bounds = {"layer": (0, None), "steering_coeff": (0, None), "normalize": (0, 1), "gamma": (0, None),
              "alpha": (0, None)}
    choices = {"direction": ("refusal", "diff")}

    def needs_reference(self):
        return "model" if self.alpha else "none"

    def trainable_regex(self) -> str:
        return trainable_regex(self.layer, self.trainable)

    def setup(self, model, tokenizer, data):
        pattern = steering_pattern(model, self.name, self.layer, self.trainable_regex())
        refusals = read_refusals(self.refusals)
        forget = data["forget"]
        was = model.training
        model.eval()
        asked = [QAItem(it.question, refusals[i % len(refusals)]) for i, it in enumerate(forget)]
        r = mean_answer_activation(model, tokenizer, asked, self.layer)
        if self.direction == "diff":
            r = r - mean_answer_activation(model, tokenizer, forget, self.layer)
        model.train(was)
        if self.normalize:
            r = r / r.norm().clamp(min=1e-12)
        self.target = (self.steering_coeff * r).detach()
        freeze_all_but(model, pattern, self.name, self.trainable_regex())
        return data

    def loss(self, model, batch, ref):
        f = batch["forget"]
        h = layer_activations(model, f, self.layer)
        forget = rmu_act_loss(h, self.target.to(h.device), f["labels"] != -100)
        r = forget * 0
        if self.alpha:
            rb = batch["retain"]
            with torch.no_grad():
                h_ref = layer_activations(ref.model, rb, self.layer)
            r = rmu_act_loss(layer_activations(model, rb, self.layer), h_ref, rb["labels"] != -100)
        return self.gamma * forget + self.alpha * r, {"forget_loss": forget.item(), "retain_loss": r.item()}
