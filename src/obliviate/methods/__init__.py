"""Unlearning methods, one file each, registered by name. ``obliviate methods`` lists them."""

from . import finetune, grad_ascent, grad_diff, npo, simnpo  # noqa: F401  (each registers itself)
from . import altpo, ceu, idk_dpo, idk_nll, pdu, rmu, satimp, task_vector, undial, wga, whp  # noqa: F401
from . import attention_shift, gu, kfade, ofmu, reglu, reva, scope, shred, ssd  # noqa: F401  (this year's methods)
from .base import METHODS, Method, hyperparameters, make_method, register
from .losses import (ceu_loss, dpo_loss, idk_dpo_loss, kl_to_reference, npo_loss, pdu_forget_loss, retain_loss,
                     rmu_act_loss, satimp_loss, simnpo_loss, task_vector_negation, undial_loss, wga_loss, whp_loss)

__all__ = ["METHODS", "Method", "ceu_loss", "dpo_loss", "hyperparameters", "idk_dpo_loss", "kl_to_reference",
           "make_method", "npo_loss", "pdu_forget_loss", "register", "retain_loss", "rmu_act_loss", "satimp_loss",
           "simnpo_loss", "task_vector_negation", "undial_loss", "wga_loss", "whp_loss"]


def unlearning_methods() -> dict[str, type[Method]]:
    """Registered methods that unlearn (fine-tuning is registered too, as the recipe for target and oracle)."""
    return {k: v for k, v in METHODS.items() if v.primary == "forget"}
