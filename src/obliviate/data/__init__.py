from .benchmark import Benchmark, load_benchmark
from .collate import Encoded, PromptFormat, item_batches, pad_batch
from .formats import read_documents, read_qa, read_records, write_records
from .records import Document, QAItem
from .synthetic import SynthConfig, make_fictional_authors, write_fictional_authors

__all__ = [
    "Benchmark", "Document", "Encoded", "PromptFormat", "QAItem", "SynthConfig", "item_batches", "load_benchmark",
    "make_fictional_authors", "pad_batch", "read_documents", "read_qa", "read_records", "write_fictional_authors",
    "write_records",
]
