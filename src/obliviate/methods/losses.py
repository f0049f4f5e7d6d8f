"""Forget and retain losses as plain functions of log-probs, so they compose in a few lines.

Each function takes tensors, not models: ``npo_loss(logp_theta, logp_ref, beta)`` can be called on any numbers a user
has. Methods in this package are thin wrappers that run the forward passes and call these. A new combination is a
few lines, e.g. WGA's forget term with a KL retain term, wrapped as a method::

    @register("WGA-KL")
    @dataclass
    class WgaKl(Method):
        beta: float = 1.0
        uses_retain, reference = True, "model"

        def loss(self, model, batch, ref):
            f = batch["forget"]
            forget = wga_loss(forward_logits(model, f), f["labels"], self.beta)
            retain = retain_loss("kl", model, batch["retain"], ref)
            return forget + retain, {"forget_loss": forget.item(), "retain_loss": retain.item()}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..logprobs import IGNORE, forward_logits, nll_mean, nll_mean_of, shift, token_logprobs


def npo_loss(logp_theta: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: -(2/beta) * mean log sigmoid(-beta * (log pi_theta(y|x) - log pi_ref(y|x))), sequence log-prob sums."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp_theta - logp_ref)).mean()


def simnpo_loss(logp_theta: torch.Tensor, n_tokens: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """SimNPO: -(2/beta) * mean log sigmoid(beta * (NLL_sum/|y| - delta)); no reference model."""
    nll_per_token = -logp_theta / n_tokens.clamp(min=1)
    return -(2.0 / beta) * F.logsigmoid(beta * (nll_per_token - delta)).mean()


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor,
                    reduction: str = "answer") -> torch.Tensor:
    """KL(p_ref || p_theta) of the next-token distributions.

    ``reduction="answer"`` (obliviate's ``kl``): averaged over the positions that predict an answer token (no prompt,
    no padding). ``"batchmean"`` (open-unlearning's KL, obliviate's ``kl_batchmean``): summed over every position of
    the padded batch, prompt, padding and the last included, and divided by batch x length, as
    ``F.kl_div(..., reduction="batchmean")`` on the flattened logits; with prompts and padding counted it is smaller
    per unit of weight (2-3x on TOFU), so the peer's alpha does not transfer to ``kl``.
    """
    if reduction == "batchmean":
        logp = F.log_softmax(logits.float(), -1)
        ref_logp = F.log_softmax(ref_logits.float(), -1)
        return (ref_logp.exp() * (ref_logp - logp)).sum() / (logits.shape[0] * logits.shape[1])
    lg, _, mask = shift(logits, labels)
    ref_lg = ref_logits[:, :-1]
    logp = F.log_softmax(lg[mask].float(), -1)  # the answer rows first: row-wise, the same values, less memory
    ref_logp = F.log_softmax(ref_lg[mask].float(), -1)
    if logp.numel() == 0:
        return logits.sum() * 0.0
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()


def retain_loss(kind: str, model, retain: dict, ref) -> torch.Tensor:
    """The retain term every method can use: ``nll`` (token-mean), ``kl`` (to the frozen reference, averaged over
    answer positions), ``kl_batchmean`` (open-unlearning's KL: every position, divided by batch x length) or
    ``none``."""
    if kind == "none":
        return torch.zeros((), device=retain["input_ids"].device)
    if kind == "nll":
        return nll_mean_of(model, retain)
    logits = forward_logits(model, retain)
    if kind in ("kl", "kl_batchmean"):
        return kl_to_reference(logits, ref.logits(retain), retain["labels"],
                               "batchmean" if kind == "kl_batchmean" else "answer")
    raise ValueError(f"unknown retain loss {kind!r}")


RETAIN_LOSSES = ("nll", "kl", "kl_batchmean", "none")
KL_RETAIN_LOSSES = ("kl", "kl_batchmean")  # the ones that need the frozen starting model


# --- forget losses of the established methods (each a plain function of tensors) --------------------------------------


def dpo_loss(logp_win: torch.Tensor, logp_lose: torch.Tensor, ref_win: torch.Tensor, ref_lose: torch.Tensor,
             beta: float) -> torch.Tensor:
    """DPO as unlearning uses it: -(2/beta) * mean log sigmoid(beta * ((lw - rw) - (ll - rl))), sequence log-prob sums.

    ``win`` is the preferred answer (an "I don't know", an alternate), ``lose`` the answer to forget. The 2/beta factor
    follows open-unlearning (standard DPO has none), so that beta only sets the shape, as in NPO.
    """
    margin = (logp_win - ref_win) - (logp_lose - ref_lose)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


idk_dpo_loss = dpo_loss


def soft_target_ce(logits: torch.Tensor, labels: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the soft targets softmax(target_logits), averaged over target positions (shift done here).

    ``target_logits`` has the shape of ``logits`` (B, T, V) and is aligned with them: position t predicts label t+1.
    """
    lg, _, mask = shift(logits, labels)
    q = F.softmax(target_logits[:, :-1][mask].float(), -1).detach()
    if q.numel() == 0:
        return logits.sum() * 0.0
    return -(q * F.log_softmax(lg[mask].float(), -1)).sum(-1).mean()


def undial_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, beta: float,
                reduction: str = "answer") -> torch.Tensor:
    """UNDIAL: CE(p_theta, softmax(z_ref - beta * onehot(y_t))).

    ``reduction="answer"``: averaged over answer positions only; prompt and padding positions are neither penalised
    nor counted. ``"all"`` (open-unlearning's): averaged over every position of the padded batch, those positions
    distilled from the undampened teacher (the peer also dampens vocabulary id V-100 there, where label -100 wraps
    around; that bug is not reproduced).
    """
    _, lb, mask = shift(logits, labels)
    target = ref_logits.detach().float().clone()
    dampen = torch.zeros_like(target[:, :-1]).scatter_(-1, lb.clamp(min=0).unsqueeze(-1), beta)
    target[:, :-1] -= dampen * mask.unsqueeze(-1)
    if reduction == "all":
        lg, tg = logits[:, :-1].float(), target[:, :-1]
        return -(F.softmax(tg, -1) * F.log_softmax(lg, -1)).sum(-1).mean()
    return soft_target_ce(logits, labels, target)


def _token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (zero off target) and the target mask, both (B, T-1)."""
    lp, mask = token_logprobs(logits, labels)
    return -lp, mask


def wga_loss(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Weighted gradient ascent: -mean_t (w_t * NLL_t) with w_t = p_t^beta (detached), over answer tokens."""
    nll, mask = _token_nll(logits, labels)
    w = torch.exp(-beta * nll).detach()
    return -(w * nll * mask).sum() / mask.sum().clamp(min=1)


def satimp_loss(logits: torch.Tensor, labels: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """SatImp: -mean_t (w_t * NLL_t) with w_t = p_t^beta1 * (1 - p_t)^beta2 (detached), over answer tokens."""
    nll, mask = _token_nll(logits, labels)
    p = torch.exp(-nll).detach()
    w = p.pow(beta1) * (1 - p).clamp(min=0).pow(beta2)
    return -(w * nll * mask).sum() / mask.sum().clamp(min=1)


def ceu_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_first_n: int = 1) -> torch.Tensor:
    """CE-U: CE(p_theta, softmax(z with z[y_t] := -inf)) (target detached), averaged over answer positions after the
    first ``ignore_first_n`` answer tokens of each sequence."""
    lg, lb, mask = shift(logits, labels)
    mask = mask & (mask.long().cumsum(-1) > ignore_first_n)
    z = lg[mask].float()
    if z.numel() == 0:
        return logits.sum() * 0.0
    y = lb[mask]
    target = z.detach().clone()
    target[torch.arange(len(y), device=y.device), y] = float("-inf")
    q = F.softmax(target, -1)
    return -(q * F.log_softmax(z, -1)).sum(-1).mean()


def pdu_forget_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PDU's logit-margin flattening: mean over answer-predicting positions of (max_v z_v - mean_v z_v)^2.

    The positions are those whose logits predict an answer token (the shift done once), not the anchor's unshifted
    positions, which skipped the first answer token and included the prediction after EOS.
    """
    lg, _, mask = shift(logits, labels)
    z = lg[mask].float()
    if z.numel() == 0:
        return logits.sum() * 0.0
    return (z.max(-1).values - z.mean(-1)).square().mean()


def rmu_act_loss(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's masked activation MSE: mean_b [ sum_s mask * mean_d (h - target)^2 / sum_s mask ].

    ``h`` is (B, S, d); ``target`` broadcasts to it (a control vector (d,), or the frozen model's activations);
    ``mask`` (B, S) marks the positions that count (answer tokens: labels != -100, unshifted, since activations at
    position s belong to token s).
    """
    per_pos = (h.float() - target.float()).square().mean(-1)
    m = mask.to(per_pos.dtype)
    return ((per_pos * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()


def whp_generic_logits(base_logits: torch.Tensor, reinforced_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """Who's Harry Potter's generic predictions: v_generic = v_base - alpha * ReLU(v_reinforced - v_base)."""
    return base_logits - alpha * F.relu(reinforced_logits - base_logits)


def generic_labels(labels: torch.Tensor, generic_logits: torch.Tensor) -> torch.Tensor:
    """``labels`` with each answer token replaced by the argmax of the generic logits that predict it."""
    new = labels.clone()
    mask = labels[:, 1:] != IGNORE
    new[:, 1:][mask] = generic_logits[:, :-1].argmax(-1)[mask]
    return new


def whp_loss(logits: torch.Tensor, labels: torch.Tensor, generic_logits: torch.Tensor,
             soft: bool = False) -> torch.Tensor:
    """Fine-tune towards the generic predictions at answer positions: token-mean CE to their argmax (``soft=False``,
    the paper's labels) or to softmax(generic_logits) (``soft=True``)."""
    if soft:
        return soft_target_ce(logits, labels, generic_logits)
    return nll_mean(logits, generic_labels(labels, generic_logits.detach()))


def task_vector_negation(theta: torch.Tensor, theta_ft: torch.Tensor, alpha: float) -> torch.Tensor:
    """Task arithmetic's forgetting: theta - alpha * (theta_ft - theta), theta_ft fine-tuned on the forget set."""
    return theta - alpha * (theta_ft - theta)


# --- this year's methods (SHRED, GU, OFMU, SSD, ReGLU, attention shifting) ---------------------------------------------


def demotion_target(topk_probs: torch.Tensor, topk_ids: torch.Tensor, tokens: torch.Tensor, demote: torch.Tensor,
                    variant: str = "A", nucleus: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """SHRED's KL target on the teacher's top-k support: q(v) = p(v) * 1[v not in V_t] / Z_t.

    ``topk_probs``/``topk_ids`` (N, k) are the teacher's k most likely tokens, sorted, probabilities *not*
    renormalised; ``tokens`` (N,) the memorised tokens; ``demote`` (N,) marks the selected (high-surprisal) positions.
    Variant A removes x_t; variant B also removes the nucleus: the shortest prefix of the sorted top-k whose mass
    reaches ``nucleus``. Unselected positions keep V_t empty. Returns (q, ok); ok is False where nothing is left.
    """
    remove = topk_ids == tokens.unsqueeze(-1)
    if variant == "B":
        before = topk_probs.cumsum(-1) - topk_probs  # mass strictly before each entry
        remove = remove | (before < nucleus)
    remove = remove & demote.unsqueeze(-1)
    q = topk_probs.float() * ~remove
    z = q.sum(-1, keepdim=True)
    return q / z.clamp(min=1e-30), z.squeeze(-1) > 0


def topk_kl(logits: torch.Tensor, q: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(q || softmax(logits)), q supported on ``ids``: sum_j q_j (log q_j - log p(ids_j))."""
    if q.numel() == 0:
        return logits.sum() * 0.0
    logp = F.log_softmax(logits.float(), -1).gather(-1, ids)
    qlogq = torch.where(q > 0, q * q.clamp(min=1e-30).log(), torch.zeros_like(q))
    return (qlogq - q * logp).sum(-1).mean()


def gradient_surrogate(params, directions, value: torch.Tensor | float) -> torch.Tensor:
    """A scalar whose value is ``value`` and whose gradient with respect to ``params`` is ``directions``.

    Lets a method that computes its own update (gradient projection, finite differences) hand it to a training loop
    that only calls ``loss.backward()``: sum_p <p, d_p> has gradient d_p; the value is shifted to the real loss.
    """
    dot = sum((p * d.detach().to(p.dtype)).sum() for p, d in zip(params, directions))
    value = torch.as_tensor(value, dtype=dot.dtype, device=dot.device)
    return (value - dot).detach() + dot


def ssd_dampen(theta: torch.Tensor, imp_forget: torch.Tensor, imp_retain: torch.Tensor, alpha: float,
               dampening: float, exponent: float = 1.0) -> torch.Tensor:
    """Selective Synaptic Dampening: where I_f > alpha * I_D, theta *= min((dampening * I_D / I_f)^exponent, 1)."""
    selected = imp_forget > alpha * imp_retain
    beta = (dampening * imp_retain / imp_forget.clamp(min=1e-30)).pow(exponent).clamp(max=1.0)
    return torch.where(selected, theta * beta.to(theta.dtype), theta)


def inverted_hinge_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Inverted hinge: mean over answer tokens of max(0, 1 + p_y - max_{v != y} p_v) (probabilities, shift done here)."""
    lg, lb, mask = shift(logits, labels)
    p = F.softmax(lg[mask].float(), -1)
    if p.numel() == 0:
        return logits.sum() * 0.0
    y = lb[mask]
    p_y = p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    other = p.scatter(-1, y.unsqueeze(-1), float("-inf")).max(-1).values
    return F.relu(1 + p_y - other).mean()


def rol_loss(lora_b: torch.Tensor, retain_basis: torch.Tensor) -> torch.Tensor:
    """ReGLU's representation orthogonality loss ||B^T Q_r||_F^2 (B: d_out x r, Q_r: d_out x k orthonormal)."""
    return (lora_b.float().T @ retain_basis.to(lora_b.device, torch.float32)).square().sum()


def attention_mass(attn: torch.Tensor, query_mask: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Mean over (sequence, head, query in ``query_mask``) of the attention mass on the keys in ``key_mask``.

    ``attn`` is (B, H, T, T) attention probabilities; ``query_mask`` and ``key_mask`` are (B, T) booleans.
    """
    mass = (attn.float() * key_mask[:, None, None, :].float()).sum(-1)  # (B, H, T)
    w = query_mask[:, None, :].float().expand_as(mass)
    return (mass * w).sum() / w.sum().clamp(min=1)


def attention_kl(ref_attn: torch.Tensor, attn: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """Mean over (sequence, head, query in ``query_mask``) of KL(ref row || row) between attention distributions."""
    p, q = ref_attn.float(), attn.float()
    kl = torch.where(p > 0, p * (p.clamp(min=1e-30).log() - q.clamp(min=1e-30).log()), torch.zeros_like(p)).sum(-1)
    w = query_mask[:, None, :].float().expand_as(kl)
    return (kl * w).sum() / w.sum().clamp(min=1)
