"""Tokenisation and batching: prompt tokens get label -100, the answer plus EOS is the target.

How a question becomes a prompt is a ``PromptSpec`` (``config.PROMPT_PRESETS``: the model's chat template rendered with
a fixed date and an optional system prompt, or user/assistant tags; by default the chat template when the tokenizer has
one, else ``"Question: {q}\\nAnswer:"`` with the answer following after a space). By default prompt and answer are
tokenised separately and concatenated, so the prompt's tokens are the same in training, scoring and generation; a spec
with ``tokenize_jointly`` tokenises them as one text, as open-unlearning does. Each encoding keeps the exact prompt and
target strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import PromptSpec
from ..errors import ConfigError, DataError

IGNORE = -100
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"  # the default spec's prompt without a chat template


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt: str
    target: str
    prompt_len: int


def set_prompt_spec(tokenizer, spec: PromptSpec | None) -> None:
    """Make ``spec`` the prompt format of every ``PromptFormat`` built on ``tokenizer`` without one of its own.

    The format belongs with the tokenizer, as its chat template does: every part of a run (training, the audit, the
    certificate's sub-audits, methods that score items) then prompts the model the same way."""
    tokenizer.obliviate_prompt = spec


class PromptFormat:
    """Turns (question, answer) into token ids and labels for one tokenizer and one ``PromptSpec``."""

    def __init__(self, tokenizer, max_length: int = 512, use_chat_template: bool | None = None,
                 system_prompt: str | None = None, spec: PromptSpec | None = None):
        self.tok = tokenizer
        self.max_length = max_length
        spec = spec or getattr(tokenizer, "obliviate_prompt", None) or PromptSpec()
        self.spec = spec
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if spec.chat_template == "on" and not has_template:
            raise ConfigError(f"prompt format {spec.name!r} needs the tokenizer's chat template, and this tokenizer "
                              "has none; use --chat-template off (or --prompt-format plain)")
        self.chat = has_template and spec.chat_template != "off"
        if use_chat_template is not None:
            self.chat = use_chat_template and has_template
        self.system_prompt = spec.system_prompt if system_prompt is None else system_prompt
        if tokenizer.eos_token_id is None:
            raise DataError("tokenizer: has no EOS token; set one (tokenizer.eos_token) before training")

    def _messages(self, question: str, answer: str | None = None) -> list[dict]:
        messages = [{"role": "user", "content": question}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return messages

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        # the fixed date_string keeps templates that print a date (Llama-3.x) from reading the calendar
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                            date_string=self.spec.date_string)

    def prompt(self, question: str) -> str:
        if self.chat:
            return self._render(self._messages(question), True)
        s = self.spec
        system = s.system_prefix or (f"{s.system_prompt}\n\n" if s.system_prompt else "")
        return f"{system}{s.user_start}{question}{s.user_end}{s.assistant_start}"

    def target(self, answer: str) -> str:
        return answer if self.chat else self.spec.answer_prefix + answer

    def prompt_ids(self, question: str) -> list[int]:
        return self._ids(self.prompt(question))

    def _ids(self, prompt: str) -> list[int]:
        # A chat template already writes the BOS token as text; a plain prompt lets the tokenizer add it.
        return self.tok(prompt, add_special_tokens=not self.chat)["input_ids"]

    def encode(self, question: str, answer: str, where: str = "") -> Encoded:
        prompt = self.prompt(question)  # rendered once: a chat template is a Jinja render per call
        p_ids = self._ids(prompt)
        target = self.target(answer)
        if len(p_ids) >= self.max_length:
            raise DataError(f"{where or 'record'}: field 'question' is {len(p_ids)} tokens, longer than max_length "
                            f"{self.max_length}")
        if self.spec.tokenize_jointly:
            # open-unlearning's way: the whole exchange tokenised as one text (a chat template renders the
            # assistant's turn too), EOS appended unless it is already last; the answer is what follows the prompt
            if self.chat:
                full = self.tok(self._render(self._messages(question, answer), False),
                                add_special_tokens=False)["input_ids"]
            else:
                full = self.tok(prompt + target, add_special_tokens=True)["input_ids"]
            if full[-1] != self.tok.eos_token_id:
                full = full + [self.tok.eos_token_id]
            a_ids = full[len(p_ids):]
        else:
            a_ids = self.tok(target, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
        a_ids = a_ids[: self.max_length - len(p_ids)]
        ids = p_ids + a_ids
        return Encoded(ids, [IGNORE] * len(p_ids) + a_ids, prompt, target, len(p_ids))

    def describe(self) -> dict:
        """What report.json records of the format: the spec, whether the chat template was used, an example prompt."""
        import dataclasses

        return {**dataclasses.asdict(self.spec), "chat_template_used": self.chat,
                "example_prompt": self.prompt("{question}")}


def pad_batch(encs: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad for teacher-forced passes: padding gets attention 0 and label -100."""
    n = max(len(e.input_ids) for e in encs)
    ids = torch.full((len(encs), n), pad_id, dtype=torch.long)
    labels = torch.full((len(encs), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(encs), n), dtype=torch.long)
    for i, e in enumerate(encs):
        k = len(e.input_ids)
        ids[i, :k] = torch.tensor(e.input_ids)
        labels[i, :k] = torch.tensor(e.labels)
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pad_prompts_left(prompts: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompt ids for batched generation."""
    n = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), n), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, n - len(p):] = torch.tensor(p)
        mask[i, n - len(p):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def item_batches(tokenizer, items, batch_size: int, device, max_length: int = 4096, with_index: bool = False):
    """Padded batches of QA items in their order (``index`` holds the item indices when asked)."""
    fmt = PromptFormat(tokenizer, max_length)
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        b = pad_batch([fmt.encode(it.question, it.answer) for it in chunk], tokenizer.pad_token_id)
        if with_index:
            b["index"] = torch.arange(s, s + len(chunk))
        yield {k: v.to(device) for k, v in b.items()}
