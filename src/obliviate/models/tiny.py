"""Tiny models built from a config in-process: a byte-level BPE tokenizer trained on the data at hand and a small Llama.

They need no download, train in minutes on a CPU, and are real transformers models, so every code path (generation,
save/load, accelerate) is the one a large model takes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class TinyConfig:
    vocab_size: int = 2048
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 256
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def train_tokenizer(texts: list[str], vocab_size: int = 2048):
    """A byte-level BPE (no unknown tokens, ever) with <s>, </s> and <pad>, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_tiny_model(tokenizer, cfg: TinyConfig | None = None):
    """A freshly initialised small Llama whose vocabulary matches ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = cfg or TinyConfig()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def tiny_from_texts(texts: list[str], cfg: TinyConfig | None = None):
    """Tokenizer and model in one call: what tests and the demo use."""
    cfg = cfg or TinyConfig()
    tok = train_tokenizer(texts, cfg.vocab_size)
    return build_tiny_model(tok, cfg), tok
