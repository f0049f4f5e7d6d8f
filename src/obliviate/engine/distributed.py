"""What the training loop needs to run the same job on several processes (``accelerate launch``, ``torchrun``).

Data parallelism in obliviate splits *micro-batches*, not items: global micro-batch ``m`` of the seeded schedule
(``engine.pairing``) is the same ``batch_size`` rows whatever the process count, and one optimizer step consumes
``grad_accum * processes`` of them, process ``r`` taking micro-batches ``r, r + P, r + 2P, ...`` of the step. Each
micro-batch's loss is therefore computed on exactly the rows, padding and token counts it has in a one-process run, and
averaging the gradients over processes (DDP) equals averaging them over accumulation steps: a run on ``P`` processes
with ``grad_accum = A`` equals a one-process run with ``grad_accum = A * P``, for every method, whatever its loss
reduction (per-token or per-sequence means, ratios, weights). Splitting the items of one micro-batch over processes
instead would change token-mean losses (each process would divide by its own token count).

Logged numbers are averaged over processes before the main process writes ``metrics.jsonl``; the loss guard looks at
every process's loss, so all processes stop together.
"""

from __future__ import annotations

import os

import torch

from ..errors import ConfigError
from ..scoring.passes import process_shard, sum_over_processes

# accelerate's distributed types that shard the parameters: each process holds a slice of the model
SHARDED = ("FSDP", "DEEPSPEED")


def global_micro(step: int, k: int, grad_accum: int, world: int, rank: int) -> int:
    """Index in the seeded schedule of process ``rank``'s ``k``-th micro-batch of optimizer step ``step``."""
    return (step * grad_accum + k) * world + rank


def strategy(accelerator) -> str:
    """accelerate's distributed type as a short name: ``NO``, ``MULTI_CPU``, ``MULTI_GPU``, ``FSDP``, ``DEEPSPEED``."""
    return str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type)).upper()


def check_strategy(method, accelerator, lora: bool = False) -> None:
    """Refuse, with one line, what cannot run sharded; warn when a sharded strategy was asked for and not applied.

    A method that needs the whole model on every process (``Method.whole_model``, LoRA) is refused under FSDP and
    DeepSpeed. So is any run under them for now: the loop saves checkpoints and the final model from the main process's
    copy of the weights, which sharding would leave partial, and no GPU was at hand to prove a gather
    (docs/scale.md). On the CPU, accelerate (1.16) turns an FSDP launch into DDP (FSDP is only set up for GPU-like
    devices), which trains correctly but shards nothing: said in a warning."""
    import warnings

    kind = strategy(accelerator)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and kind != "FSDP":
        warnings.warn(f"FSDP was asked for, but accelerate runs {kind} here (no GPU): every process holds the whole "
                      f"model", stacklevel=2)
    if kind not in SHARDED:
        return
    need = method.whole_model or ("LoRA adapters (peft)" if lora else "")
    if need:
        raise ConfigError(f"method {method.name} keeps {need}, which needs the whole model on every process, and "
                          f"{kind} shards the parameters; run it with DDP or one process (configs/accelerate/ddp.yaml "
                          f"or single.yaml)")
    raise ConfigError(f"{kind}: obliviate's training loop does not gather sharded weights for its checkpoints and "
                      f"final model yet; run with DDP (configs/accelerate/ddp.yaml), see docs/scale.md")


def launched() -> tuple[int, int]:
    """(processes, rank) of the launch this process belongs to (``accelerate launch``/``torchrun`` set WORLD_SIZE and
    RANK), before or after the process group exists; (1, 0) for a plain run."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def join_processes() -> tuple[int, int]:
    """Start this launch's process group (accelerate's state: gloo on CPU, nccl on GPU) if there is one and it is not
    started; return (processes, rank). Commands that run without an ``Accelerator`` (the audit) call it so their
    passes are sharded (``scoring.passes``)."""
    world, _ = launched()
    if world > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    return process_shard()


def all_agree(flag: bool) -> bool:
    """Whether ``flag`` holds on every process (alone: ``flag``): a decision that gates collective work, such as
    using a cached result, must be the same everywhere or the processes wait on each other forever."""
    world, _ = process_shard()
    if world == 1:
        return bool(flag)
    return int(sum_over_processes(torch.tensor([int(bool(flag))])).item()) == world


def barrier() -> None:
    """Wait until every process of the launch gets here (nothing to wait for alone)."""
    if process_shard()[0] > 1:
        torch.distributed.barrier()


def mean_over_processes(values: dict[str, float], world: int) -> dict[str, float]:
    """Each logged number averaged over the processes (every process must log the same keys)."""
    if world == 1 or not values:
        return values
    keys = sorted(values)
    t = sum_over_processes(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
    return {k: float(v) / world for k, v in zip(keys, t.tolist())}


def losses_of_all(value: float, world: int, rank: int) -> list[float]:
    """This micro-batch's loss on every process (for the loss guard: one process's divergence stops them all)."""
    if world == 1:
        return [value]
    t = torch.zeros(world, dtype=torch.float64)
    t[rank] = value
    return sum_over_processes(t).tolist()


__all__ = ["SHARDED", "all_agree", "barrier", "check_strategy", "global_micro", "join_processes", "launched",
           "losses_of_all", "mean_over_processes", "process_shard", "strategy"]
