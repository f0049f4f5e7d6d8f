"""Tokenisation and batching: prompt tokens get label -100, the answer plus EOS is the target.

The prompt is the model's chat template when its tokenizer has one, else ``"Question: {q}\\nAnswer:"`` with the answer
following after a space. Prompt and answer are tokenised separately and concatenated, so the prompt's tokens are the
same in training, scoring and generation. Each encoding keeps the exact prompt and target strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError

IGNORE = -100
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt: str
    target: str
    prompt_len: int


class PromptFormat:
    """Turns (question, answer) into token ids and labels for one tokenizer."""

    def __init__(self, tokenizer, max_length: int = 512, use_chat_template: bool | None = None, system_prompt: str | None = None):
        self.tok = tokenizer
        self.max_length = max_length
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.chat = has_template if use_chat_template is None else (use_chat_template and has_template)
        self.system_prompt = system_prompt
        if tokenizer.eos_token_id is None:
            raise DataError("tokenizer: has no EOS token; set one (tokenizer.eos_token) before training")

    def prompt(self, question: str) -> str:
        if self.chat:
            messages = [{"role": "user", "content": question}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return PLAIN_TEMPLATE.format(question=question)

    def target(self, answer: str) -> str:
        return answer if self.chat else " " + answer

    def prompt_ids(self, question: str) -> list[int]:
        text = self.prompt(question)
        # A chat template already writes the BOS token as text; a plain prompt lets the tokenizer add it.
        return self.tok(text, add_special_tokens=not self.chat)["input_ids"]

    def encode(self, question: str, answer: str, where: str = "") -> Encoded:
        p_ids = self.prompt_ids(question)
        target = self.target(answer)
        a_ids = self.tok(target, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
        if len(p_ids) >= self.max_length:
            raise DataError(f"{where or 'record'}: field 'question' is {len(p_ids)} tokens, longer than max_length "
                            f"{self.max_length}")
        a_ids = a_ids[: self.max_length - len(p_ids)]
        return Encoded(p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids, self.prompt(question), target, len(p_ids))


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
