from .load import decoder_blocks, default_device, ensure_pad_token, load_model, save_model
from .tiny import TinyConfig, build_tiny_model, tiny_from_texts, train_tokenizer

__all__ = ["TinyConfig", "build_tiny_model", "decoder_blocks", "default_device", "ensure_pad_token", "load_model", "save_model",
           "tiny_from_texts", "train_tokenizer"]
