"""Building blocks that several methods share. A method file imports from here, from ``base`` and ``losses``, and
never from another method file.

* parameter selection: ``freeze_all_but_last`` (last decoder blocks + head), ``trainable_regex`` /
  ``steering_pattern`` / ``freeze_all_but`` (parameters by name), ``linear_modules`` (the nn.Linear layers a
  curvature method preconditions);
* layer hooks: ``decoder_layers``, ``layer_activations`` (the hidden states of one decoder block, forward stopped
  there);
* word statistics: ``WORD``, ``document_frequency``;
* alternate answers: ``idk_stream`` ("I don't know" answers aligned with the forget set), ``dpo_towards`` (DPO
  preferring an aligned stream to the forget answers);
* wrappers: ``make_inner`` / ``parse_hparams`` / ``max_reference`` build and describe the method a wrapper (GU, Scope)
  holds;
* ``finetune_copy``: a fine-tuned copy of a model (task vectors, WHP's reinforced model);
* random state: ``rng_state`` / ``replayed`` (a second pass under the dropout masks of the first: OFMU, SAM-NPO).
"""

from __future__ import annotations

import copy
import random
import re
from collections import Counter
from contextlib import contextmanager

import torch

from ..data.collate import PromptFormat, pad_batch
from ..data.records import QAItem
from ..engine.pairing import micro_batch_indices
from ..errors import ConfigError
from ..logprobs import forward_logits, nll_mean, sequence_logprob_of
from ..models import decoder_blocks
from ..resources import idk_answers
from .base import Method, make_method
from .losses import dpo_loss

# ------------------------------------------------------------------------------------------- parameter selection

def freeze_all_but_last(model, last: int) -> list[str]:
    """Train only the last ``last`` decoder blocks, the final norm and the output head; return the trainable names."""
    prefix, blocks = decoder_blocks(model)
    first = max(0, len(blocks) - last)
    out_emb = model.get_output_embeddings()
    out_ids = {id(p) for p in out_emb.parameters()} if out_emb is not None else set()
    in_emb = model.get_input_embeddings()
    in_ids = {id(p) for p in in_emb.parameters()} if in_emb is not None else set()
    kept = []
    for name, p in model.named_parameters():
        if name.startswith(prefix + "."):
            keep = int(name[len(prefix) + 1:].split(".")[0]) >= first
        else:
            keep = id(p) in out_ids or id(p) not in in_ids  # head (tied or not) and final norm
        p.requires_grad_(keep and p.requires_grad)
        if p.requires_grad:
            kept.append(name)
    return kept


def trainable_regex(layer: int, trainable: str = "") -> str:
    """``trainable``, or by default the MLP down-projections of blocks layer-2 .. layer (WMDP's choice)."""
    if trainable:
        return trainable
    ids = "|".join(str(i) for i in range(max(0, layer - 2), layer + 1))
    return rf"layers\.({ids})\.mlp\.down_proj\."


def steering_pattern(model, method: str, layer: int, regex: str) -> re.Pattern:
    """Check that ``layer`` exists and ``regex`` compiles (before any work); return the compiled pattern."""
    n = len(decoder_layers(model))
    if layer >= n:
        raise ConfigError(f"method {method}: hyperparameter 'layer' = {layer} but the model has {n} decoder layers "
                          f"(0..{n - 1})")
    try:
        return re.compile(regex)
    except re.error as e:
        raise ConfigError(f"method {method}: hyperparameter 'trainable' is not a valid regex ({e})") from None


def freeze_all_but(model, pattern: re.Pattern, method: str, regex: str) -> list[str]:
    """Leave gradients on only the (already trainable) parameters whose name matches; return their names."""
    selected = []
    for name, p in model.named_parameters():
        keep = p.requires_grad and bool(pattern.search(name))
        p.requires_grad_(keep)
        if keep:
            selected.append(name)
    if not selected:
        raise ConfigError(f"method {method}: no trainable parameter matches 'trainable' = {regex!r}")
    return selected


def linear_modules(model, pattern: str, method: str) -> dict[str, torch.nn.Linear]:
    """The model's nn.Linear modules whose names match ``pattern`` ("" = all but the output head)."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"method {method}: hyperparameter 'target' is not a valid regex ({e})") from None
    head = model.get_output_embeddings()
    mods = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
            and (rx.search(n) if pattern else m is not head)}
    if not mods:
        raise ConfigError(f"method {method}: no linear layer matches 'target' = {pattern!r}")
    return mods


# --------------------------------------------------------------------------------------------------- layer hooks

class _Stop(Exception):
    pass


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (``model.layers``, ``transformer.h``, ...), found by its length."""
    return decoder_blocks(model)[1]


def layer_activations(model, batch: dict, layer: int) -> torch.Tensor:
    """Output hidden states (B, S, d) of decoder block ``layer``; the forward pass stops there."""
    captured = {}

    def hook(module, args, out):
        captured["h"] = out[0] if isinstance(out, tuple) else out
        raise _Stop

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured["h"]


# ----------------------------------------------------------------------------------------------- word statistics

WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")


def document_frequency(items: list[QAItem]) -> dict[str, float]:
    """Fraction of items (question + answer) in which each lower-cased word occurs."""
    counts: Counter[str] = Counter()
    for it in items:
        counts.update({w.lower() for w in WORD.findall(it.question + " " + it.answer)})
    n = max(len(items), 1)
    return {w: c / n for w, c in counts.items()}


# --------------------------------------------------------------------------------------------- alternate answers

def idk_stream(forget: list[QAItem], idk_file: str, seed: int) -> list[QAItem]:
    """One "I don't know" answer per forget question, drawn with a seeded generator."""
    answers = idk_answers(idk_file or None)
    rng = random.Random(seed)
    return [QAItem(question=it.question, answer=rng.choice(answers), entity=it.entity, id=it.id) for it in forget]


def dpo_towards(model, batch, ref, win_stream: str, beta: float):
    """DPO preferring the aligned ``win_stream`` answers to the forget answers.

    Returns (loss, lose log-probs, win log-probs)."""
    f, w = batch["forget"], batch[win_stream]
    lose, _ = sequence_logprob_of(model, f)
    win, _ = sequence_logprob_of(model, w)
    ref_win, ref_lose = ref.sequence_logprob(win_stream, w), ref.sequence_logprob("forget", f)
    return dpo_loss(win, lose, ref_win, ref_lose, beta), lose, win


# ------------------------------------------------------------------------------------------------------ wrappers

_ORDER = {"none": 0, "logprobs": 1, "model": 2}


def parse_hparams(text: str, where: str) -> dict[str, str]:
    """``"beta=0.1,delta=0"`` -> {"beta": "0.1", "delta": "0"} (values are coerced by ``make_method``)."""
    out = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in part:
            raise ConfigError(f"{where}: expected KEY=VALUE pairs separated by commas, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def make_inner(wrapper: str, name: str, hp_text: str, retain_off: bool = True) -> Method:
    """The wrapped method, with its own retain weight set to 0 unless given (the wrapper supplies the retain term)."""
    hp = parse_hparams(hp_text, f"method {wrapper}: hyperparameter 'inner_hp'")
    cls_name = name.lower()
    if cls_name == wrapper.lower():
        raise ConfigError(f"method {wrapper}: cannot wrap itself")
    inner = make_method(name, **hp)
    if retain_off and "alpha" not in hp and hasattr(inner, "alpha"):
        inner = make_method(name, **{**hp, "alpha": 0.0})
    if not inner.trains or inner.primary != "forget":
        raise ConfigError(f"method {wrapper}: inner method {inner.name} must be a training unlearning method")
    return inner


def max_reference(*modes: str) -> str:
    return max(modes, key=lambda m: _ORDER[m])


# --------------------------------------------------------------------------------------------- fine-tuned copies

def finetune_copy(model, tokenizer, items, steps: int, lr: float, batch_size: int, seed: int = 0,
                  max_length: int = 256, max_grad_norm: float = 1.0, weight_decay: float = 0.0, log=None):
    """A copy of ``model`` fine-tuned on ``items`` (token-mean NLL, AdamW, seeded order); ``model`` is untouched."""
    ft = copy.deepcopy(model)
    ft.train()
    params = [p for p in ft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    fmt = PromptFormat(tokenizer, max_length)
    encs = [fmt.encode(it.question, it.answer, where=f"forget item {i}") for i, it in enumerate(items)]
    device = next(ft.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            _, idx = micro_batch_indices(step, len(encs), batch_size, 1, 0, seed)
            b = {k: v.to(device) for k, v in pad_batch([encs[i] for i in idx], tokenizer.pad_token_id).items()}
            loss = nll_mean(forward_logits(ft, b), b["labels"])
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            opt.zero_grad()
            if log is not None:
                log(step + 1, loss.item())
    ft.eval()
    for p in ft.parameters():
        p.requires_grad_(False)
    return ft


def rng_state(device) -> tuple:
    """The random state dropout draws from on ``device`` (the CPU's, plus the accelerator's when there is one)."""
    device = torch.device(device)
    accel = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return device, torch.get_rng_state(), accel


@contextmanager
def replayed(state):
    """Run the block with the random state ``state`` (so dropout draws the same masks as when it was taken), then
    continue the global random stream as if the block had not run."""
    device, cpu, accel = state
    with torch.random.fork_rng(devices=[device] if accel is not None else []):
        torch.set_rng_state(cpu)
        if accel is not None:
            torch.cuda.set_rng_state(accel, device)
        yield
