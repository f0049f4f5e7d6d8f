"""The training loop: one readable function on accelerate, shared by fine-tuning and every unlearning method.

Per optimizer step: build the micro-batches (forget items in a seeded order, each paired with a retain item), ask the
method for a loss, back-propagate with gradient accumulation, clip, step, log one line to ``metrics.jsonl``, and every
``save_every`` steps write a checkpoint (model, optimizer, scheduler, RNG and method state; safetensors and JSON, no
pickle: ``checkpoint.py``) that ``resume=True`` picks up.
Data order is a pure function of (seed, epoch), so nothing about the data loader needs saving.
On several processes (``accelerate launch``) each takes whole micro-batches of the same seeded schedule
(``distributed.py``): P processes with ``grad_accum`` A train exactly as one process with ``grad_accum`` A x P.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ..config import TrainConfig
from ..data.collate import Encoded, PromptFormat, pad_batch, set_prompt_spec
from ..data.records import QAItem
from ..errors import DataError, TrainingError
from ..io import append_jsonl, read_jsonl, write_json, write_text
from ..logprobs import IGNORE
from ..threads import rebalance
from .checkpoint import check_global_batch, clear_trash, load_checkpoint, remove_tree, save_checkpoint
from .distributed import check_strategy, global_micro, losses_of_all, mean_over_processes, process_shard
from .pairing import Schedule
from .reference import Reference
from .run_folder import claim


def _encode_all(fmt: PromptFormat, data: dict[str, list[QAItem]]):
    """Every stream's records as encodings: a QA item as prompt + answer, a document or a window of one
    (``data.documents``) as plain text whose every token is a target."""
    from ..data.documents import encode_text, is_text_record

    def qa(it: QAItem, where: str) -> Encoded:
        enc = fmt.encode(it.question, it.answer, where=where)
        skip = set((it.meta or {}).get("generic_tokens") or ())  # answer tokens that are no targets (recipes.forget)
        if skip:
            enc.labels = [IGNORE if t - enc.prompt_len in skip else y for t, y in enumerate(enc.labels)]
        return enc

    return {name: [encode_text(it, fmt.tok, fmt.max_length) if is_text_record(it) else qa(it, f"{name} item {i}")
                   for i, it in enumerate(items)]
            for name, items in data.items()}


def _scheduler(cfg: TrainConfig, optimizer, total: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(cfg.scheduler, cfg.scheduler)
    return get_scheduler(name, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total), num_training_steps=total)


def resolved_precision(precision: str, device) -> str:
    """``TrainConfig.precision`` made concrete for ``device``: ``"auto"`` is ``"bf16"`` on a CUDA device that supports
    it and ``"fp32"`` elsewhere, so a CPU run's numbers are unchanged unless bf16 is asked for."""
    if precision != "auto":
        return precision
    device = torch.device(device)
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def precision_context(precision: str, device):
    """The context the forward passes run in: bf16 autocast (matmuls in bf16, weights and optimizer state left in
    their dtype, fp32 reductions where autocast keeps them) or nothing at all for fp32."""
    import contextlib

    device = torch.device(device)
    if resolved_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders ``step-N``, oldest first (stray names are not checkpoints)."""
    found = [p for p in (run_dir / "checkpoints").glob("step-*") if p.name[5:].isdigit() and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (``trainer_state.json`` is written last), or None."""
    return next((p for p in reversed(_checkpoints(run_dir)) if (p / "trainer_state.json").is_file()), None)


def train(model, tokenizer, method, data: dict[str, list[QAItem]], cfg: TrainConfig, run_dir: str | Path,
          resume: bool = False, progress: bool = True, keep_checkpoints: int = 2):
    """Run ``method`` on ``data`` (``{"forget": ..., "retain": ...}`` or ``{"train": ...}``); return the trained model.

    ``run_dir`` receives ``metrics.jsonl``, ``checkpoints/`` and ``status.json``. The caller saves the final model.
    ``status.json`` says ``running`` while the loop runs, ``diverged`` when the loss guard stopped it and ``failed``
    (with the error) when an exception did; a killed process leaves ``running``. Never ``completed``: the caller writes
    that once the model is saved.
    """
    try:
        return _train(model, tokenizer, method, data, cfg, run_dir, resume, progress, keep_checkpoints)
    except Exception as e:
        mark_failed(Path(run_dir), e)
        raise


def mark_failed(run_dir: Path, error: BaseException) -> None:
    """Record in status.json that the run stopped on ``error`` (a diverged run keeps its own status); the main
    process writes it."""
    if process_shard()[1] != 0:
        return
    status_path = run_dir / "status.json"
    try:
        if isinstance(error, TrainingError) and json.loads(status_path.read_text()).get("state") == "diverged":
            return
    except (OSError, ValueError):
        pass
    if not run_dir.is_dir():
        return
    try:  # best effort: never hide the error being reported
        last = read_jsonl(run_dir / "metrics.jsonl")
        message = (str(error).strip().splitlines() or [""])[0]
        ckpt = latest_checkpoint(run_dir)
        write_json(status_path, {"state": "failed", "step": last[-1].get("step", 0) if last else 0,
                                 "error": f"{type(error).__name__}: {message}".rstrip(": "),
                                 "last_checkpoint": str(ckpt) if ckpt else None})
    except Exception:
        pass


def _with_retain(stream: str) -> bool:
    """Whether a stream's items are drawn with the retain stream's (``retain`` itself, and ``retain_*`` streams that
    give each retain item something of its own, e.g. IdkDPO's refusals of retain questions)."""
    return stream == "retain" or stream.startswith("retain_")


def _train(model, tokenizer, method, data, cfg: TrainConfig, run_dir, resume: bool, progress: bool,
           keep_checkpoints: int):
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    cfg.validate()
    set_prompt_spec(tokenizer, cfg.prompt)  # the setting's prompt format, for the loop and the method's own passes
    primary = method.primary
    if not data.get(primary):
        raise DataError(f"the {primary} split is empty: nothing to train on")
    if method.uses_retain and not data.get("retain"):
        raise DataError(f"method {method.name} needs a retain split, and it is empty")
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, cpu=not torch.cuda.is_available())
    check_strategy(method, accelerator, lora=hasattr(model, "peft_config"))
    run_dir = Path(run_dir)
    if accelerator.is_main_process:  # one process owns the folder; the others wait until it is ready
        claim(run_dir, option="run folder")  # obliviate's own folder, or refused: a fresh run clears it below
        if not resume:  # a fresh run: nothing of an earlier run in this folder may be resumed or reused
            clear_trash(run_dir)
            clear_trash(run_dir / "checkpoints")
            remove_tree(run_dir / "checkpoints")
            (run_dir / "reference_cache.safetensors").unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)
    model.to(accelerator.device)
    data = method.setup(model, tokenizer, dict(data))
    if not method.trains:
        method.apply(model, tokenizer, data, cfg, run_dir)
        method.finish(model)
        if accelerator.is_main_process:
            write_json(run_dir / "status.json", {"state": "trained", "step": 0, "total_steps": 0})
        return model
    if not method.uses_retain:
        for name in [n for n in data if _with_retain(n)]:
            data.pop(name)
    fmt = PromptFormat(tokenizer, cfg.max_length)
    enc = _encode_all(fmt, data)
    for name, encs in enc.items():  # a stream named retain_* aligns with the retain stream, any other with primary
        base = "retain" if _with_retain(name) else primary
        if name not in (primary, "retain") and len(encs) != len(enc.get(base, [])):
            raise DataError(f"stream '{name}' has {len(encs)} items; it must align with the "
                            f"{len(enc.get(base, []))} {base} items")
    pad_id = tokenizer.pad_token_id
    n = len(enc[primary])
    world, rank = accelerator.num_processes, accelerator.process_index
    retained = data.get("retain") or []
    schedule = Schedule(cfg.pairing, n, len(retained), cfg.seed, [it.entity for it in data[primary]],
                        [it.entity for it in retained])
    per_epoch = -(-schedule.epoch_length // cfg.batch_size)  # micro-batches per epoch, whatever the process count
    per_step = cfg.grad_accum * world  # micro-batches per optimizer step (engine.distributed)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / per_step))

    ref_mode = method.needs_reference()
    precision = resolved_precision(cfg.precision, accelerator.device)
    with precision_context(precision, accelerator.device):  # the reference scored as the trained model will be
        ref = Reference(ref_mode, model, enc, pad_id, batch_size=max(cfg.batch_size, 16),
                        cache_file=run_dir / "reference_cache.safetensors" if ref_mode != "none" else None,
                        streams=method.reference_streams, shard=(world, rank),
                        variant="" if precision == "fp32" else precision)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = _scheduler(cfg, optimizer, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    stepped = torch.compile(model) if cfg.compile else model  # what the loss runs; weights shared with ``model``

    step = 0
    metrics_path = run_dir / "metrics.jsonl"
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        check_global_batch(ckpt, cfg.batch_size, cfg.grad_accum, world)
        state = load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler)
        step = state["step"]
        method.load_state_dict(state.get("method_state", {}))
        if metrics_path.exists() and accelerator.is_main_process:  # drop lines logged after the checkpoint
            n_kept = sum(1 for r in read_jsonl(metrics_path) if r.get("step", 0) <= step)  # skips a cut-off last line
            lines = metrics_path.read_text(encoding="utf-8").splitlines(keepends=True)
            write_text(metrics_path, "".join(ln if ln.endswith("\n") else ln + "\n"
                                             for ln in [x for x in lines if x.strip()][:n_kept]))
    elif metrics_path.exists() and accelerator.is_main_process:
        metrics_path.unlink()
    if accelerator.is_main_process:
        write_json(run_dir / "status.json", {"state": "running", "step": step, "total_steps": total_steps})

    def batch_of(name: str, idx) -> dict:
        b = pad_batch([enc[name][i] for i in idx], pad_id)
        b["index"] = torch.as_tensor(idx, dtype=torch.long)
        return {k: v.to(accelerator.device) for k, v in b.items()}

    bar = tqdm(total=total_steps, initial=step, desc=f"{method.name}",
               disable=not (progress and accelerator.is_main_process), unit="step", dynamic_ncols=True)
    t0 = time.time()
    while step < total_steps:
        rebalance()  # this job's share of the CPUs, re-read as other jobs start and end
        logs_acc: dict[str, float] = {}
        for k in range(cfg.grad_accum):
            micro = global_micro(step, k, cfg.grad_accum, world, rank)
            _, idx, retain_idx = schedule.micro_batch(micro, cfg.batch_size)
            batch = {}
            for name in enc:
                if _with_retain(name):  # the retain stream and any stream aligned with it (retain_*)
                    batch[name] = batch_of(name, retain_idx)
                else:  # the primary stream and any stream aligned with it
                    batch[name] = batch_of(name, idx)
            with accelerator.accumulate(model):
                with precision_context(precision, accelerator.device):
                    loss, logs = method.loss(stepped, batch, ref)
                value = loss.item()
                bad = [v for v in losses_of_all(value, world, rank) if not math.isfinite(v) or abs(v) > cfg.loss_bound]
                if bad:  # every process sees every process's loss: they stop together
                    value = bad[0]
                    last = latest_checkpoint(run_dir)
                    if accelerator.is_main_process:
                        write_json(run_dir / "status.json", {"state": "diverged", "step": step, "loss": str(value)})
                    raise TrainingError(f"step {step + 1}: loss is {value} (bound {cfg.loss_bound}); run stopped, "
                                        f"last good checkpoint: {last or 'none'} (lower --lr, or raise --loss-bound)")
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            for key, v in {"loss": value, **logs}.items():
                logs_acc[key] = logs_acc.get(key, 0.0) + v / cfg.grad_accum
        scheduler.step()
        step += 1
        logs_acc = mean_over_processes(logs_acc, world)
        record = {"step": step, "epoch": round(step * per_step / per_epoch, 4), "lr": scheduler.get_last_lr()[0],
                  **{k: round(v, 6) for k, v in logs_acc.items()}, **method.state_dict(),
                  "elapsed_s": round(time.time() - t0, 3)}
        if accelerator.is_main_process:
            append_jsonl(metrics_path, record)
            bar.set_postfix(loss=f"{logs_acc['loss']:.4f}")
            bar.update(1)
        if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
            _save_checkpoint(accelerator, model, optimizer, scheduler, run_dir, step, method, keep_checkpoints,
                             {"batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "processes": world})
    bar.close()
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(model)
    method.finish(model)
    return model


def _save_checkpoint(accelerator, model, optimizer, scheduler, run_dir: Path, step: int, method, keep: int,
                     batching: dict) -> None:
    """The main process writes the checkpoint (under DDP every process holds the same weights and optimizer state)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(run_dir / "checkpoints" / f"step-{step}", accelerator.unwrap_model(model), optimizer,
                        scheduler, step, method.state_dict(), batching)
        for old in _checkpoints(run_dir)[:-keep]:
            remove_tree(old)
    accelerator.wait_for_everyone()
