"""Training on text corpora: documents cut into token windows in which every token is a target.

MUSE and WMDP unlearn *corpora* (news articles, a book, bio/cyber papers), not question-answer pairs. A corpus is a list
of ``Document`` records (any file ``formats.read_documents`` reads, or a plain ``.txt`` file: one document).
``chunk_documents`` tokenises each document once (BOS + text + EOS) and cuts it into windows of at most ``max_length``
tokens that start every ``stride`` tokens (``stride = max_length`` by default: no overlap, as MUSE chunks its corpora);
each window is a ``DocChunk`` whose labels are its input ids (no prompt), so the engine trains language modelling on
every token. The engine's ``_encode_all`` encodes a chunk as it is, and a whole ``Document`` as one window cut at
``max_length``.

Methods built on question-answer structure (an "I don't know" answer per question, alternate answers sampled from the
question, words of the question) set the class attribute ``needs_qa`` to what they need (a non-empty text);
``check_method_for_documents`` refuses them with one line before anything is trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError
from .collate import Encoded
from .formats import read_documents, read_text_file
from .records import Document


@dataclass
class DocChunk:
    """One token window of a document: ``input_ids`` are trained on as they are (labels = input ids)."""

    input_ids: list[int]
    text: str                      # the window decoded (for reports; training uses ``input_ids``)
    id: str | None = None          # "<document id or index>:<window index>"
    entity: str | None = None      # the document's entity (retain pairing by entity still works)
    meta: dict = field(default_factory=dict)


def read_corpus(path: str | Path) -> list[Document]:
    """A corpus file as documents: ``.txt`` is one document (MUSE's ``raw/*.txt``), any other supported file one
    document per record (field ``text`` or an alias)."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        text = read_text_file(path)
        if not text.strip():
            raise DataError(f"{path}: holds no text")
        return [Document(text=text, id=path.stem)]
    return read_documents(path)


def chunk_documents(docs: list[Document], tokenizer, max_length: int, stride: int | None = None,
                    where: str = "corpus") -> list[DocChunk]:
    """Cut each document (BOS + tokens + EOS) into windows of ``max_length`` tokens starting every ``stride`` tokens.

    The last window of a document ends at its last token (it may be shorter); windows of fewer than 2 tokens (nothing
    to predict) are dropped. ``stride`` must be in [1, max_length]: a larger one would skip tokens.
    """
    stride = max_length if stride is None else stride
    if max_length < 2:
        raise ConfigError(f"max_length = {max_length}: a document window needs at least 2 tokens")
    if not 1 <= stride <= max_length:
        raise ConfigError(f"stride = {stride} must be between 1 and max_length ({max_length}); a larger stride skips "
                          "tokens")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    chunks: list[DocChunk] = []
    for i, d in enumerate(docs):
        if not d.text.strip():
            raise DataError(f"{where}: document {i}: field 'text' is empty")
        ids = bos + tokenizer(d.text, add_special_tokens=False)["input_ids"] + eos
        name = d.id if d.id is not None else str(i)
        start = 0
        while True:
            window = ids[start:start + max_length]
            if len(window) >= 2:
                chunks.append(DocChunk(window, tokenizer.decode(window, skip_special_tokens=True),
                                       f"{name}:{len(chunks)}", d.entity))
            if start + max_length >= len(ids):
                break
            start += stride
    if not chunks:
        raise DataError(f"{where}: no document has 2 tokens or more: nothing to train on")
    return chunks


def encode_text(record, tokenizer, max_length: int) -> Encoded:
    """A ``DocChunk`` (as it is) or a ``Document`` (BOS + text + EOS, cut at ``max_length``) as an encoding whose
    labels are its input ids: no prompt, every token a target."""
    if isinstance(record, DocChunk):
        ids = list(record.input_ids[:max_length])
    else:
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids = (bos + tokenizer(record.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        ids = ids[:max_length]
    return Encoded(ids, list(ids), "", record.text, 0)


def is_text_record(record) -> bool:
    """Whether a training record is a plain text (a document or a window of one) rather than a question-answer item."""
    return isinstance(record, (DocChunk, Document))


def needs_qa(method) -> bool:
    """Whether ``method`` (or the inner method a wrapper holds) needs question-answer items."""
    inner = getattr(method, "_inner", None)
    return bool(getattr(method, "needs_qa", False)) or (inner is not None and needs_qa(inner))


def _qa_need(method) -> str:
    need = getattr(method, "needs_qa", "")
    if need:
        return need if isinstance(need, str) else "question-answer items"
    return _qa_need(method._inner)


def check_method_for_documents(method) -> None:
    """Refuse, with one line, a method that needs question-answer structure when the forget set is a corpus."""
    if needs_qa(method):
        what = _qa_need(method)
        raise ConfigError(f"method {method.name} needs {what}, and a document corpus has none; use a method defined "
                          "on plain text (GradAscent, GradDiff, NPO, SimNPO, RMU, ...)")
