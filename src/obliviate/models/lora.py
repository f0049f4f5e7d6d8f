"""LoRA adapters (peft) for any method, merged into the weights before saving.

``apply_lora(model, LoraOptions(r=8, alpha=16))`` freezes the base weights and adds trainable low-rank adapters
W + (alpha/r) B A (B starts at 0, so the model is unchanged until trained); ``merge_lora`` folds them back and returns
the plain model, which ``save_model`` writes like any other. Defaults are MELU's unlearning setting (r 8, alpha 16,
dropout 0.05 on every linear layer of the blocks: q, k, v, o, gate, up, down). Methods see a model whose only trainable
parameters are the adapters: RMU's ``trainable`` regex then selects among them (``...down_proj.lora_A...``), and
task-vector negation negates the adapter's B.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError


@dataclass
class LoraOptions:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=list)  # empty: every linear layer but the output head

    def validate(self) -> None:
        if int(self.r) != self.r or self.r < 1:
            raise ConfigError(f"lora: r = {self.r} must be an integer >= 1")
        if self.alpha <= 0:
            raise ConfigError(f"lora: alpha = {self.alpha} must be > 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora: dropout = {self.dropout} must be in [0, 1)")
        if isinstance(self.target_modules, str):
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]

    def to_dict(self) -> dict:
        return asdict(self)


def lora_options(values: dict | LoraOptions | None) -> LoraOptions | None:
    """``LoraOptions`` from a mapping (``{"r": 8, "alpha": 16, ...}``), naming any unknown key; None stays None."""
    if values is None or isinstance(values, LoraOptions):
        opts = values
    else:
        known = set(LoraOptions.__dataclass_fields__)
        for key in values:
            if key not in known:
                raise ConfigError(f"lora: unknown option '{key}' (known: {', '.join(sorted(known))})")
        opts = LoraOptions(**values)
    if opts is not None:
        opts.validate()
    return opts


def apply_lora(model, opts: LoraOptions | dict | None = None):
    """Wrap ``model`` with trainable LoRA adapters; every other parameter is frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("LoRA needs the peft package: pip install 'obliviate[peft]'") from None
    opts = lora_options(opts) or LoraOptions()
    config = LoraConfig(r=int(opts.r), lora_alpha=opts.alpha, lora_dropout=opts.dropout, bias="none",
                        target_modules=list(opts.target_modules) or "all-linear", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise ConfigError(f"lora: {e}".splitlines()[0]) from None


def is_lora(model) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def merge_lora(model):
    """Fold the adapters into the base weights and return the plain model (one without adapters is returned as is)."""
    return model.merge_and_unload() if is_lora(model) else model
