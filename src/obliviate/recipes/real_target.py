"""A recipe on a real pretrained model: unlearn a real-world target (the RWKU setting). TOFU on a pretrained model is
``tofu_pretrained.py``.

Real-world target (``obliviate demo --real``), top to bottom:

1. load the model (default ``smollm2-135m``, converted once from the packaged GGUF);
2. *before*: ask every probe of the target (cloze, questions, adversarial), its neighbour probes and the
   general-knowledge utility probes, greedily; a probe counts as known when its answer appears in the generation
   (``data.real_targets.answer_hit``); the audit keeps the known probes of each set, so "before" is 1.0 by construction and
   "after" is the share of what the model knew that it still knows;
3. the forget corpus: the model writes about the target itself (sampled answers to prompts such as "Tell me about
   {name}."); the retain corpus: the model's own greedy answers about related entities that are *not* the neighbour
   probes' entities (the neighbour probes stay held out) and to open everyday prompts;
4. unlearn with ``REAL_METHOD`` (forget corpus = forget stream, retain corpus = retain stream);
5. *after*: ask the known probes again; ``report.json`` in the run folder holds both audits, every generation, the
   corpora, the settings and the time each stage took.

The before-audit and the corpora depend only on the starting model, the probes and the settings: they are cached, so a
second run goes straight to unlearning.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_key, cache_root, weights_fingerprint
from ..config import REAL_HPARAMS, REAL_METHOD, REAL_MODEL, REAL_TARGET, REAL_TRAIN, TrainConfig
from ..data.collate import PromptFormat
from ..data.real_targets import (
    Probe,
    RealTarget,
    RealWorldSet,
    answer_hit,
    from_rwku,
    probe_question,
    read_realworld,
    relative_change,
)
from ..data.records import QAItem
from ..engine.run_folder import check_run_folder, claim
from ..errors import ConfigError, DataError
from ..io import write_json
from ..scoring.passes import generate_answers


@dataclass
class GenSettings:
    """How probes are asked and how the corpora are written."""

    probe_tokens: int = 24  # greedy tokens per probe answer (answers sit in the first sentence)
    corpus_tokens: int = 64  # tokens per corpus text
    forget_samples: int = 2  # sampled texts per corpus prompt about the target
    retain_prompts_per_entity: int = 1  # corpus prompts used per retain entity
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 16
    seed: int = 0


# ---------------------------------------------------------------------------------------------------------- asking

def _generate(model, tok, questions: list[str], max_new_tokens: int, batch_size: int, sample: bool = False,
              temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> list[str]:
    """Chat-template generations (greedy, or sampled with a fixed seed), cut at the stop token ``tok.eos_token``."""
    was_training = model.training
    model.eval()
    try:
        return generate_answers(model, tok, PromptFormat(tok), questions, batch_size, max_new_tokens, sample=sample,
                                temperature=temperature, top_p=top_p, seed=seed)
    finally:
        model.train(was_training)


def answer_probes(model, tok, probes: list[Probe], max_new_tokens: int = 24, batch_size: int = 16) -> list[str]:
    """The model's greedy answer to each probe (asked with RWKU's instructions, in the chat template)."""
    return _generate(model, tok, [probe_question(p) for p in probes], max_new_tokens, batch_size)


def score_rows(probes: list[Probe], generations: list[str]) -> list[dict]:
    """One row per probe: the probe, the generation, ``hit`` (answer_hit) and RWKU's ROUGE-L recall."""
    from ..scoring.metrics import rouge_l_recall

    rows = []
    for p, g in zip(probes, generations):
        rows.append({**p.to_dict(), "prompt": probe_question(p), "generation": g, "hit": answer_hit(g, p.answers),
                     "rougeL_recall": max(rouge_l_recall(g, a) for a in p.answers)})
    return rows


def set_metrics(name: str, rows: list[dict]) -> dict[str, float]:
    """``{name}_accuracy`` (share of hits) and ``{name}_rougeL`` (mean ROUGE-L recall) of a probe set."""
    if not rows:
        return {}
    return {f"{name}_accuracy": sum(r["hit"] for r in rows) / len(rows),
            f"{name}_rougeL": sum(r["rougeL_recall"] for r in rows) / len(rows)}


def probe_sets(target: RealTarget, rwset: RealWorldSet) -> dict[str, list[Probe]]:
    """The audit's probe sets for one target: forget (every kind), neighbour, utility (general knowledge)."""
    return {"forget": target.forget_probes(), "neighbor": target.neighbor_probes(), "utility": list(rwset.general)}


def audit_probes(model, tok, sets: dict[str, list[Probe]], gen: GenSettings | None = None) -> dict:
    """Ask every probe set; return ``{"metrics", "per_item"}`` with per-kind forget metrics too."""
    gen = gen or GenSettings()
    flat = [(name, p) for name, ps in sets.items() for p in ps]
    gens = answer_probes(model, tok, [p for _, p in flat], gen.probe_tokens, gen.batch_size)
    per_item: dict[str, list[dict]] = {name: [] for name in sets}
    for (name, p), row in zip(flat, score_rows([p for _, p in flat], gens)):
        per_item[name].append(row)
    return {"metrics": metrics_of(per_item), "per_item": per_item}


def metrics_of(per_item: dict[str, list[dict]]) -> dict[str, float]:
    """Every probe set's metrics, and the forget set's per kind (cloze, question, adversarial)."""
    metrics: dict[str, float] = {}
    for name, rows in per_item.items():
        metrics.update(set_metrics(name, rows))
        if name == "forget":
            for kind in ("cloze", "question", "adversarial"):
                metrics.update(set_metrics(f"forget_{kind}", [r for r in rows if r["kind"] == kind]))
    return metrics


def known_targets(model, tok, rwset: RealWorldSet, threshold: float = 0.5, gen: GenSettings | None = None,
                  attacks: bool = False) -> list[dict]:
    """Probe every target's forget probes (those written in the data; attack wrappings only with ``attacks``) and
    return ``[{"target", "accuracy", "answered", "probes", "known"}]``; known means accuracy >= ``threshold``."""
    out = []
    for t in rwset.targets:
        probes = [p for p in t.forget_probes() if attacks or not p.framed]
        rows = score_rows(probes, answer_probes(model, tok, probes, (gen or GenSettings()).probe_tokens))
        acc = sum(r["hit"] for r in rows) / len(rows)
        out.append({"target": t.name, "accuracy": acc, "answered": sum(r["hit"] for r in rows), "probes": len(rows),
                    "known": acc >= threshold})
    return out


# ----------------------------------------------------------------------------------------------------------- corpora

def trim_to_sentence(text: str) -> str:
    """Cut a generation cut off by the token limit back to its last full sentence (if that keeps half of it)."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    if ends and ends[-1] < len(text) and ends[-1] >= len(text) // 2:
        return text[:ends[-1]]
    return text


def write_corpus(model, tok, requests: list[tuple[str, str]], gen: GenSettings, sample: bool = True,
                 role: str = "forget") -> list[QAItem]:
    """The model's own texts: one answer per ``(question, entity)`` request, generated in batches (sampled with a
    fixed seed, or greedy), cut back to the last full sentence; empty answers are dropped."""
    texts = _generate(model, tok, [q for q, _ in requests], gen.corpus_tokens, gen.batch_size, sample=sample,
                      temperature=gen.temperature, top_p=gen.top_p, seed=gen.seed)
    items = []
    for i, ((q, e), t) in enumerate(zip(requests, texts)):
        t = trim_to_sentence(t)
        if t:
            items.append(QAItem(question=q, answer=t, entity=e or None, id=f"{role}:{i}", meta={"written_by": "model"}))
    return items


def corpus_requests(target: RealTarget, rwset: RealWorldSet, gen: GenSettings) -> dict[str, list[tuple[str, str]]]:
    """What the model is asked to write: ``forget_samples`` answers to each corpus prompt about the target; for the
    retain corpus, ``retain_prompts_per_entity`` prompts (rotated) about each retain entity plus every retain prompt."""
    prompts = target.corpus_prompts or rwset.corpus_prompts
    forget = [(pr.format(name=target.name), target.name) for pr in prompts for _ in range(gen.forget_samples)]
    retain = [(prompts[(j + i) % len(prompts)].format(name=ent), ent)
              for j, ent in enumerate(target.retain_entities) for i in range(gen.retain_prompts_per_entity)]
    retain += [(pr, "") for pr in rwset.retain_prompts]
    return {"forget": forget, "retain": retain}


def build_corpora(model, tok, target: RealTarget, rwset: RealWorldSet, gen: GenSettings) -> dict[str, list[QAItem]]:
    """Forget corpus (sampled texts about the target) and retain corpus (greedy texts about the target's retain
    entities and answers to the open retain prompts)."""
    req = corpus_requests(target, rwset, gen)
    forget = write_corpus(model, tok, req["forget"], gen, sample=True, role="forget")
    retain = write_corpus(model, tok, req["retain"], gen, sample=False, role="retain")
    if not forget:
        raise DataError(f"target {target.name}: the model wrote no forget corpus")
    return {"forget": forget, "retain": retain}


# ------------------------------------------------------------------------------------------------------------ demo

def resolve_target(name: str | None, rwset: RealWorldSet, rwku: str | Path | None = None) -> RealTarget:
    """A built-in target by name, or (with ``rwku``) an RWKU target by name or id, its probes as published."""
    if rwku is not None:
        from ..data.rwku import load_target

        return from_rwku(load_target(rwku, name or 1, texts=False))
    return rwset.target(name or REAL_TARGET)


def real_demo(out_dir: str | Path, target: str | None = None, method: str = REAL_METHOD, hparams: dict | None = None,
              cfg: TrainConfig | None = None, model: str = REAL_MODEL, rwku: str | Path | None = None,
              gen: GenSettings | None = None, use_cache: bool = True, progress: bool = True, log=print) -> dict:
    """Unlearn one real target from a pretrained model and audit forget, neighbour and utility probes before and after.

    Writes ``out_dir/report.json`` and ``out_dir/model``; prints the before/after table; returns the report.
    """
    from ..engine import train
    from ..methods import make_method
    from ..models import load_model, save_model

    t_start = time.time()
    timing: dict[str, float] = {}
    out_dir = Path(out_dir)
    check_run_folder(out_dir, {"--model": model, "--rwku": rwku})
    cfg = cfg or dataclasses.replace(REAL_TRAIN)
    gen = gen or GenSettings()
    hp = {**REAL_HPARAMS.get(method, {}), **(hparams or {})}
    m = make_method(method, **hp)
    if m.primary != "forget":
        raise ConfigError(f"method {m.name} is not an unlearning method")
    rwset = read_realworld()
    tgt = resolve_target(target, rwset, rwku)
    if not tgt.retain_entities and not rwset.retain_prompts:
        raise DataError(f"target {tgt.name}: no retain entities or retain prompts to write a retain corpus from")

    t = time.time()
    net, tok = load_model(model, dtype="fp32")
    from ..models.smollm2 import converted_dir, is_alias

    model_dir = converted_dir() if is_alias(model) else Path(model)
    timing["load_s"] = round(time.time() - t, 1)
    sets = probe_sets(tgt, rwset)
    sets_dump = {k: [p.to_dict() for p in v] for k, v in sets.items()}
    wkey = weights_fingerprint(model_dir) if model_dir.is_dir() else str(model)
    before_cache = cache_root() / "realworld" / "before" / cache_key(wkey, sets_dump, gen.probe_tokens) / "before.json"
    corpus_cache = cache_root() / "realworld" / "corpora" / cache_key(
        wkey, tgt.name, dataclasses.asdict(gen), rwset.retain_prompts, tgt.retain_entities,
        tgt.corpus_prompts or rwset.corpus_prompts) / "corpora.json"

    # 1. before: every probe
    t = time.time()
    before_all = None
    if use_cache and before_cache.exists():
        before_all = json.loads(before_cache.read_text())
        log(f"[obliviate] before-audit of {tgt.name}: cached")
    if before_all is None:
        log(f"[obliviate] asking {sum(map(len, sets.values()))} probes about {tgt.name}, its neighbours and general "
            "knowledge (before)")
        # the forget probes first: a target the model does not know stops here, before the other probes are asked
        forget_rows = audit_probes(net, tok, {"forget": sets["forget"]}, gen)["per_item"]["forget"]
        _check_known(tgt, sets, forget_rows)
        rest = audit_probes(net, tok, {k: v for k, v in sets.items() if k != "forget"}, gen)["per_item"]
        per_item = {"forget": forget_rows, **rest}
        before_all = {"metrics": metrics_of(per_item), "per_item": per_item}
        if use_cache:
            write_json(before_cache, before_all)
    timing["before_audit_s"] = round(time.time() - t, 1)
    known = {name: [p for p, r in zip(sets[name], before_all["per_item"][name]) if r["hit"]] for name in sets}
    counts = {name: {"known": len(known[name]), "asked": len(sets[name])} for name in sets}
    _check_known(tgt, sets, before_all["per_item"]["forget"])
    for name in ("neighbor", "utility"):
        if not known[name]:
            raise DataError(f"target {tgt.name}: the model answers none of the {name} probes")
    before = {"per_item": {name: [r for r in before_all["per_item"][name] if r["hit"]] for name in sets}}
    before["metrics"] = metrics_of(before["per_item"])
    before["metrics"].update({f"{name}_accuracy_all_probes": before_all["metrics"].get(f"{name}_accuracy")
                              for name in sets})

    # 2. corpora written by the model itself
    t = time.time()
    if use_cache and corpus_cache.exists():
        raw = json.loads(corpus_cache.read_text())
        corpora = {k: [QAItem(**d) for d in v] for k, v in raw.items()}
        log("[obliviate] forget and retain corpora: cached")
    else:
        log(f"[obliviate] the model writes its forget corpus about {tgt.name} and its retain corpus")
        corpora = build_corpora(net, tok, tgt, rwset, gen)
        if use_cache:
            write_json(corpus_cache, {k: [dataclasses.asdict(it) for it in v] for k, v in corpora.items()})
    timing["corpus_s"] = round(time.time() - t, 1)

    # 3. unlearning
    t = time.time()
    log(f"[obliviate] unlearning {tgt.name} with {m.name} {m.hparams()}: {len(corpora['forget'])} forget texts, "
        f"{len(corpora['retain'])} retain texts, {cfg.max_steps or cfg.epochs} "
        f"{'steps' if cfg.max_steps else 'epochs'} -> {out_dir}")
    config = {"command": "demo --real", "model": str(model), "target": tgt.name, "method": m.name,
              "hparams": m.hparams(), "train": dataclasses.asdict(cfg), "generation": dataclasses.asdict(gen),
              "rwku": str(rwku) if rwku else None}
    claim(out_dir, {"--model": model, "--rwku": rwku})
    write_json(out_dir / "status.json", {"state": "running"})
    write_json(out_dir / "config.json", config)
    net = train(net, tok, m, {"forget": corpora["forget"], "retain": corpora["retain"]}, cfg, out_dir,
                progress=progress)
    timing["unlearn_s"] = round(time.time() - t, 1)

    # 4. after: the known probes again
    t = time.time()
    log("[obliviate] asking the known probes again (after)")
    after = audit_probes(net, tok, known, gen)
    timing["after_audit_s"] = round(time.time() - t, 1)
    t = time.time()
    save_model(net, tok, out_dir / "model")
    timing["save_s"] = round(time.time() - t, 1)
    timing["total_s"] = round(time.time() - t_start, 1)

    ratios = {f"{name}_after_over_before": relative_change(before["metrics"][f"{name}_accuracy"],
                                                             after["metrics"].get(f"{name}_accuracy", float("nan")))
              for name in sets}
    report = build_real_report(tgt, before, after, counts, ratios, corpora, config, timing)
    write_json(out_dir / "report.json", report)
    write_json(out_dir / "status.json", {"state": "completed"})
    log("\n" + format_real_table(report))
    log(f"\n[obliviate] report: {out_dir / 'report.json'}  ({timing['total_s']:.0f} s)")
    return report


def _check_known(tgt: RealTarget, sets: dict[str, list[Probe]], forget_rows: list[dict]) -> None:
    known = sum(1 for r in forget_rows if r["hit"])
    if known < 3:
        raise DataError(f"target {tgt.name}: the model answers only {known} of its {len(sets['forget'])} probes; it "
                        f"does not know the target well enough to unlearn it")


REAL_DIRECTIONS = {"forget_accuracy": "lower", "forget_cloze_accuracy": "lower", "forget_question_accuracy": "lower",
                   "forget_adversarial_accuracy": "lower", "forget_rougeL": "lower", "neighbor_accuracy": "higher",
                   "neighbor_rougeL": "higher", "utility_accuracy": "higher", "utility_rougeL": "higher"}


def build_real_report(tgt: RealTarget, before: dict, after: dict, counts: dict, ratios: dict, corpora: dict,
                      config: dict, timing: dict) -> dict:
    """report.json of a real-target run, in the shape of ``report.summary.build_report`` (``metrics`` of the unlearned
    model, ``compare.before``, ``per_item``, ``directions``, ``config``, ``versions``) plus the probe counts, the
    after/before ratios and the corpora the model wrote."""
    from ..report.summary import build_report

    result = {"metrics": {**after["metrics"], **ratios}, "per_item": after["per_item"], "raw": {},
              "cost": {"seconds": timing.get("total_s"), **timing}}
    rep = build_report(result, config, {"before": {**before, "raw": {}}}, model_name="after")
    rep["directions"] = {**rep.get("directions", {}), **REAL_DIRECTIONS}
    rep["scenario"] = {"target": tgt.name, "kind": tgt.kind, "intro": tgt.intro, "neighbors": tgt.neighbors,
                       "retain_entities": tgt.retain_entities, "probes": counts,
                       "note": "metrics are over the probes the starting model answered (before = 1.0 by construction); "
                               "*_accuracy_all_probes is the starting model's accuracy over every probe asked"}
    rep["corpora"] = {k: [dataclasses.asdict(it) for it in v] for k, v in corpora.items()}
    return rep


def format_real_table(report: dict) -> str:
    """The before/after table: one row per probe set, accuracy and ROUGE-L recall, and after/before."""
    b, a = report["compare"]["before"], report["metrics"]
    probes = report["scenario"]["probes"]
    rows = [("forget (all kinds)", "forget"), ("  cloze", "forget_cloze"), ("  question", "forget_question"),
            ("  adversarial", "forget_adversarial"), ("neighbour", "neighbor"), ("utility (general)", "utility")]
    head = ["probe set", "probes", "acc before", "acc after", "after/before", "rougeL before", "rougeL after", "better"]
    lines = []
    for label, key in rows:
        if f"{key}_accuracy" not in b:
            continue
        n = probes.get(key, {}).get("known") if key in probes else \
            sum(1 for r in report["compare_per_item"].get("before", {}).get("forget", []) if r.get("kind") ==
                key.split("_", 1)[1])
        ab, aa = b[f"{key}_accuracy"], a.get(f"{key}_accuracy")
        ratio = aa / ab if (aa is not None and ab) else float("nan")
        lines.append([label, str(n), f"{ab:.3f}", "-" if aa is None else f"{aa:.3f}", f"{ratio:.2f}",
                      f"{b.get(f'{key}_rougeL', float('nan')):.3f}", f"{a.get(f'{key}_rougeL', float('nan')):.3f}",
                      "lower" if key.startswith("forget") else "higher"])
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i in (0, len(r) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    sc = report["scenario"]
    title = (f"target: {sc['target']}   method: {report['config']['method']}   probes the starting model answered: "
             + ", ".join(f"{k} {v['known']}/{v['asked']}" for k, v in probes.items()))
    return "\n".join([title, fmt(head), "  ".join("-" * w for w in widths), *(fmt(r) for r in lines)])


__all__ = ["GenSettings", "REAL_METHOD", "REAL_MODEL", "REAL_TARGET", "REAL_TRAIN", "answer_probes",
           "audit_probes", "build_corpora", "format_real_table", "known_targets", "real_demo", "score_rows",
           "set_metrics", "trim_to_sentence", "write_corpus"]
