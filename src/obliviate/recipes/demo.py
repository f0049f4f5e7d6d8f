"""``obliviate demo``: the whole job on the built-in fictional-authors benchmark, top to bottom.

1. the synthetic benchmark (written to ``runs/data/fictional-authors`` when missing);
2. a tiny Llama fine-tuned into the target (every split) and the oracle (retain only), cached after the first run;
3. unlearning of the forget split from the target with ``DEMO_METHOD`` (``config.py``; SAM-NPO, rho 0.1, alpha 10);
4. an audit of target, oracle and unlearned model, ``report.json`` and ``report.html`` in the run folder and the table.
"""

from __future__ import annotations

from pathlib import Path

from ..config import DEMO_HPARAMS, DEMO_METHOD, DEMO_OUT, TINY_UNLEARN, AuditConfig, TrainConfig
from ..models import TinyConfig
from ..pipeline import finetune_unlearn_audit, load_data


def run_demo(out_dir: str | Path = DEMO_OUT, method: str = DEMO_METHOD, hparams: dict | None = None,
             cfg: TrainConfig | dict | None = None, forget_split: str = "forget10",
             audit_cfg: AuditConfig | None = None, config: dict | None = None, progress: bool = True,
             log=print, seed: int | None = None) -> dict:
    """Run the demo; ``cfg`` (a TrainConfig, or options on top of ``TINY_UNLEARN``) sets the unlearning. ``seed``
    (default 0) seeds the whole job: the tiny model's initialisation, both fine-tunes and the unlearning, so each seed
    is an independent repetition (``benchmarks/demo_figures.py --seeds``). Returns the report."""
    cfg = cfg if isinstance(cfg, TrainConfig) else TINY_UNLEARN.with_options(cfg)
    finetune_cfg, tiny = None, None
    if seed is not None:
        cfg = cfg.with_options({"seed": seed})
        finetune_cfg, tiny = {"seed": seed}, TinyConfig(seed=seed)
    bench = load_data(None, forget_split)
    hparams = {**DEMO_HPARAMS.get(method, {}), **(hparams or {})}
    return finetune_unlearn_audit(bench, "tiny", method, hparams, cfg, out_dir, finetune_cfg=finetune_cfg,
                                  audit_cfg=audit_cfg, config={"command": "demo", **(config or {})},
                                  progress=progress, log=log, tiny=tiny)
