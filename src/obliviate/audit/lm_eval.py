"""General ability through lm-evaluation-harness (``pip install 'obliviate[lm-eval]'``), where the user has it and its
data.

WMDP and open-unlearning measure what unlearning costs with lm-eval tasks (``mmlu``, ``wmdp_bio``, ...). obliviate
hands the loaded model and tokenizer to lm-eval's ``HFLM`` and runs ``simple_evaluate`` on the named tasks; tasks
defined in a local folder of task YAML files (``include_path``) run offline on local data files (``dataset_path:
json`` with ``data_files``), which is also how this is tested. A missing harness, an unknown task or a task whose data
cannot be loaded is one ``ConfigError`` line.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import ConfigError

INSTALL = "pip install 'obliviate[lm-eval]' (or pip install lm-eval)"


def parse_tasks(text: str | list[str]) -> list[str]:
    """``"mmlu,wmdp_bio"`` (or a list) as task names; empty names are refused."""
    names = text if isinstance(text, list) else str(text).split(",")
    tasks = [t.strip() for t in names]
    if not tasks or not all(tasks):
        raise ConfigError(f"--lm-eval-tasks {text!r}: give task names separated by commas, e.g. mmlu,wmdp_bio")
    return tasks


def lm_eval_tasks(model, tokenizer, tasks: str | list[str], include_path: str | Path | None = None,
                  limit: int | None = None, num_fewshot: int | None = None, batch_size: int = 8,
                  add_bos_token: bool = True) -> dict:
    """Run lm-eval ``tasks`` on ``model``; return ``{task: {metric: value}}`` (numbers only, lm-eval's names such as
    ``acc,none``). ``add_bos_token`` starts every context with BOS, as obliviate scores texts (lm-eval's own default is
    off for most models)."""
    tasks = parse_tasks(tasks)
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError(f"--lm-eval-tasks needs lm-evaluation-harness, which is not installed: {INSTALL}") from None
    if include_path is not None and not Path(include_path).is_dir():
        raise ConfigError(f"--lm-eval-include {include_path}: not a folder of task YAML files")
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ConfigError(f"lm-eval: unknown task(s) {', '.join(unknown)} (see `lm-eval ls tasks`, or give the folder "
                          "of a local task with --lm-eval-include)")
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=add_bos_token)
        out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                                      num_fewshot=num_fewshot, log_samples=False)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"lm-eval: tasks {', '.join(tasks)} could not run: {first[:300]}") from None
    finally:
        model.train(was_training)
    return {task: {k: float(v) for k, v in res.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
            for task, res in out["results"].items()}
