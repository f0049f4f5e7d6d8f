"""The two kinds of record obliviate works on: question-answer items and plain documents."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class QAItem:
    """One question and its answer, with the optional variants the audit needs.

    ``paraphrased_answer`` and ``perturbed_answers`` (wrong but plausible answers in the paraphrase's template) feed the
    truth ratio; ``entity`` groups items about the same subject (an author, a person) for entity-level pairing and splits.
    """

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: list[str] = field(default_factory=list)
    paraphrased_question: str | None = None
    entity: str | None = None
    id: str | None = None
    meta: dict = field(default_factory=dict)  # any other fields of the record (RWKU's type and level, ...)

    def to_dict(self) -> dict:
        """The record in TOFU's field names (``perturbed_answer`` is the list), empty fields left out."""
        d = asdict(self)
        d["perturbed_answer"] = d.pop("perturbed_answers")
        d.update(d.pop("meta"))
        return {k: v for k, v in d.items() if v not in (None, [], "")}


@dataclass
class Document:
    """A plain text (a passage, a book chunk) whose every token is a target."""

    text: str
    id: str | None = None
    entity: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}
