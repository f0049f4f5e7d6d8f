"""Unlearning methods, one file each, registered by name. ``obliviate methods`` lists them."""

from . import (  # noqa: F401  (each registers itself)  # noqa: F401  # noqa: F401  (this year's methods)
    altpo,
    attention_shift,
    ceu,
    finetune,
    grad_ascent,
    grad_diff,
    gu,
    idk_dpo,
    idk_nll,
    kfade,
    modhifi,
    npo,
    ofmu,
    pdu,
    reglu,
    reva,
    rlcp,
    rmu,
    sam,
    satimp,
    scope,
    shred,
    simnpo,
    ssd,
    task_vector,
    trace_replace,
    undial,
    wga,
    whp,
)
from .base import METHODS, Method, hyperparameters, make_method, register
from .losses import (
    ceu_loss,
    dpo_loss,
    idk_dpo_loss,
    kl_to_reference,
    npo_loss,
    pdu_forget_loss,
    retain_loss,
    rmu_act_loss,
    satimp_loss,
    simnpo_loss,
    task_vector_negation,
    undial_loss,
    wga_loss,
    whp_loss,
)

__all__ = ["METHODS", "Method", "ceu_loss", "dpo_loss", "hyperparameters", "idk_dpo_loss", "kl_to_reference",
           "make_method", "npo_loss", "pdu_forget_loss", "register", "retain_loss", "rmu_act_loss", "satimp_loss",
           "simnpo_loss", "task_vector_negation", "undial_loss", "wga_loss", "whp_loss"]


def unlearning_methods() -> dict[str, type[Method]]:
    """Registered methods that unlearn (fine-tuning is registered too, as the recipe for target and oracle)."""
    return {k: v for k, v in METHODS.items() if v.primary == "forget"}
