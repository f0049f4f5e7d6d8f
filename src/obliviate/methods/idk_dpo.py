"""IdkDPO: DPO preferring an "I don't know" answer to the true one (TOFU, Maini et al. 2024).

TOFU (arXiv 2401.06121), after DPO (Rafailov et al. 2023), with open-unlearning's 2/beta scaling.

    r_w = log pi_theta(y_idk|x) - log pi_ref(y_idk|x),   r_l = log pi_theta(y|x) - log pi_ref(y|x)   (sequence sums)
    L_f = -(2/beta) * mean_batch log sigmoid(beta * (r_w - r_l))
    L   = gamma * L_f + alpha * L_retain

pi_ref is the frozen starting model; its log-probs of both answers are cached once (streams ``forget`` and
``forget_idk``). The refusals come from ``idk_file`` as in IdkNLL. Defaults (open-unlearning DPO): beta 0.1, gamma 1,
alpha 1, retain NLL.

``retain_pref`` (obliviate's, default 0: off) adds the same DPO the other way round on the retain stream: each retain
question's own answer preferred to an "I don't know" (stream ``retain_idk``, drawn as the forget stream's are),

    L += retain_pref * -(2/beta) * mean_batch log sigmoid(beta * (r_own - r_idk))

A model taught to refuse questions about the target learns to refuse others too ("Who discovered penicillin?" -> "I
don't know" after forgetting Einstein, issue 21); this term makes refusing a question it should answer cost as much as
answering one about the target. It needs the retain stream (alpha > 0, a retain loss).
"""

from dataclasses import dataclass

from ..errors import ConfigError
from ..logprobs import sequence_logprob_of, token_logprobs_of
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES, dpo_loss, retain_loss
from .shared import dpo_towards, idk_stream


@register("IdkDPO")
@dataclass
class IdkDPO(RetainTerm, Method):
    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"
    idk_file: str = ""
    seed: int = 0
    retain_pref: float = 0.0

    reference = "logprobs"
    needs_qa = "question-answer items (each forget question gets an \"I don't know\" answer)"
    bounds = {"beta": (1e-6, None), "gamma": (0, None), "alpha": (0, None), "retain_pref": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    @property
    def reference_streams(self) -> tuple[str, ...]:
        return ("forget", "forget_idk") + (("retain", "retain_idk") if self.retain_pref else ())

    def validate(self) -> None:
        super().validate()
        if self.retain_pref and not self.uses_retain:
            raise ConfigError(f"method {self.name}: hyperparameter 'retain_pref' = {self.retain_pref} needs the retain "
                              "stream (alpha > 0 and a retain loss other than none)")

    def setup(self, model, tokenizer, data):
        data = {**data, "forget_idk": idk_stream(data["forget"], self.idk_file, self.seed)}
        if self.retain_pref and data.get("retain"):
            data["retain_idk"] = idk_stream(data["retain"], self.idk_file, self.seed + 1)
        return data

    def loss(self, model, batch, ref):
        forget, lose, win = dpo_towards(model, batch, ref, "forget_idk", self.beta)
        logs = {"forget_logprob": lose.mean().item(), "idk_logprob": win.mean().item()}
        if not self.retain_pref:
            return self.with_retain(forget, model, batch, ref, **logs)
        r, r_idk = batch["retain"], batch["retain_idk"]
        lp, mask = token_logprobs_of(model, r)  # one pass for both retain terms when the retain loss is the NLL
        own, (idk, _) = lp.sum(-1), sequence_logprob_of(model, r_idk)
        pref = dpo_loss(own, idk, ref.sequence_logprob("retain", r), ref.sequence_logprob("retain_idk", r_idk),
                        self.beta)
        kept = -lp.sum() / mask.sum().clamp(min=1) if self.retain_loss == "nll" else \
            retain_loss(self.retain_loss, model, r, ref)
        loss = self.gamma * forget + self.alpha * kept + self.retain_pref * pref
        return loss, {"forget_loss": forget.item(), "retain_loss": kept.item(), "retain_pref_loss": pref.item(), **logs}
