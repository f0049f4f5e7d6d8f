"""`obliviate forget`: make a pretrained model forget a real entity it knows, and show that it did, every way of asking.

The target comes from the built-in set (``resources/realworld.json``), an RWKU release folder (``--rwku``, by name as
written, id or folder) or the user's own probe file (``--probes``, ``data.probe_file``). Top to bottom:

1. **screen** the probes: those whose answer is already in the question (an echo scores a hit without knowledge) and
   duplicates are set aside (``data.real_targets.screen_probes``);
2. **before**: ask the forget probes, greedily; the run goes on only when the model knows the target in several kinds
   of probe (``knowledge_gate``), then asks the neighbour and general-knowledge probes; the probes the model answers
   are the ones the audit follows (before = 1.0 by construction);
3. **training items** (``build_items``, shown and written to ``items.json`` before any training; ``--review`` stops
   there): the model's own answers about the target in the probes' shapes (direct, cloze, reverse, adversarial:
   ``data.forget_items``) as the forget stream; its own answers to general questions and about the neighbour
   entities as the retain stream. The probes are never trained on;
4. **unlearn** (``config.FORGET_METHOD`` + retain NLL by default, settings chosen on the built-in targets over
   several seeds; ``benchmarks/forget_grid.py``). ``--tokens specific`` unlearns only the forget answers'
   target-specific tokens (``generic_tokens``): a token the model finds as likely when a stand-in is named instead
   of the target ("who made groundbreaking discoveries in") is anyone's and is left out, so what is unlearned is what
   follows from the target ("relativity", "Bern", "1879"). ``--method AltPO`` prefers what the model says about a
   stand-in person, the target named back in (``methods.altpo.standin_alternates``);
5. **after**: the known probes again; ``report.json`` holds both audits per kind, every generation with the answer
   that matched, the items, the settings and each stage's time.

Before-audits and items depend only on the starting model, the probes and the settings: they are cached.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import torch

from ..cache import cache_key, cache_root, weights_fingerprint
from ..config import (
    FORGET_HPARAMS,
    FORGET_METHOD,
    FORGET_TOKENS,
    FORGET_TRAIN,
    FORGET_TRAINABLE,
    REAL_MODEL,
    TrainConfig,
)
from ..data.collate import PromptFormat, pad_batch
from ..data.forget_items import (
    GENERAL_RETAIN_ANSWERS,
    NEIGHBOUR_QUESTIONS,
    OPEN_RETAIN_TEMPLATES,
    cloze_item,
    mention_pattern,
    mentions,
    question_templates,
    renamer,
    reverse_item,
    sentences_about,
)
from ..data.real_targets import (
    ATTACKS,
    CLOZE_INSTRUCTION,
    FORGET_KINDS,
    QUESTION_INSTRUCTION,
    Probe,
    RealTarget,
    RealWorldSet,
    adversarial_variants,
    answer_match,
    knowledge_by_kind,
    knowledge_gate,
    read_realworld,
    relative_change,
    screen_probes,
    surname,
)
from ..data.records import QAItem
from ..engine.run_folder import check_run_folder, claim
from ..errors import ConfigError, DataError
from ..io import write_json
from ..logprobs import forward_logits, head_on_targets, token_logprobs
from ..methods.altpo import STAND_IN
from .real_target import (
    GenSettings,
    _generate,
    audit_probes,
    build_real_report,
    format_real_table,
    metrics_of,
    trim_to_sentence,
)

SPECIFIC_MARGIN = 1.0  # nats: a forget token counts as the target's if naming the target makes it this much likelier
ITEM_RULES = 5  # the version of build_items' rules, in the items' cache key: a change of rules is a new cache entry
NEIGHBOUR_REVERSE = 3  # reverse items per neighbour entity in the retain stream, from the model's open answers
_PRONOUN = re.compile(r"\b(?:he|she|his|her|him)\b", re.IGNORECASE)  # a neighbour written about as a person


def resolve(target: str | None, rwset: RealWorldSet, rwku: str | Path | None = None,
            probes: str | Path | None = None) -> RealTarget:
    """The target: from the user's probe file, an RWKU folder (name as written, id or folder name) or the built-in set
    (by name; near matches suggested); missing adversarial and reverse probes are made from the direct ones and the
    facts."""
    if probes is not None:
        from ..data.probe_file import read_probe_file

        tgt = read_probe_file(probes, target=target)
    elif rwku is not None:
        from ..data.real_targets import from_rwku
        from ..data.rwku import load_target

        if target is None:
            raise ConfigError("--rwku needs --target (a name as written in the data, an id or a folder name)")
        tgt = from_rwku(load_target(rwku, target, texts=False))
    else:
        if target is None:
            raise ConfigError("give --target NAME (a built-in target), --rwku DIR --target NAME, or --probes FILE")
        tgt = rwset.target(target)
    return complete_probes(tgt)


def complete_probes(tgt: RealTarget) -> RealTarget:
    """Add the probes a user need not write: adversarial wrappings of the direct questions, and reverse questions made
    from the target's facts (who is described, every mention masked), when the target has none of that kind."""
    questions = [p for p in tgt.probes.get("question", []) if not p.framed]
    if not tgt.probes.get("adversarial") and questions:
        tgt.probes["adversarial"] = adversarial_variants(questions)
    facts = list(getattr(tgt, "facts", []) or [])
    if not tgt.probes.get("reverse") and facts:
        rev = []
        for i, fact in enumerate(facts):
            qa = reverse_item(fact, tgt.name, getattr(tgt, "aliases", []), tgt.kind or "person")
            if qa:
                rev.append(Probe(qa[0], [tgt.name, *getattr(tgt, "aliases", [])], "reverse", tgt.name, tgt.name,
                                 type="reverse from facts", id=f"{tgt.name}:reverse:{i}"))
        tgt.probes["reverse"] = rev
    return tgt


def select_trainable(model, spec: str = "mlp") -> int:
    """Freeze every parameter but those ``spec`` names; return how many weights stay trainable.

    ``"mlp"`` (the default): the MLP blocks of the middle layers, from 13% to 87% of the depth (layers 4-25 of
    SmolLM2's 30), where factual associations are stored and written (ROME, Meng et al. 2022; RWKU's partial-layer
    setting); the embeddings, attention and the outermost layers stay as they are. Besides keeping what the model says
    elsewhere, it holds the optimizer's state to a third of the model (peak memory, issue 21). ``"all"``: every
    weight. Anything else: a regular expression over parameter names."""
    import re

    if spec == "all":
        names = {n for n, _ in model.named_parameters()}
    elif spec == "mlp":
        depth = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        lo, hi = round(0.13 * depth), round(0.87 * depth)
        layer = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.(?:mlp|feed_forward|ffn)\.")
        names = {n for n, _ in model.named_parameters() if (m := layer.search(n)) and lo <= int(m.group(1)) < hi}
    else:
        try:
            rx = re.compile(spec)
        except re.error as e:
            raise ConfigError(f"option 'trainable' = {spec!r} is not a valid regular expression ({e})") from None
        names = {n for n, _ in model.named_parameters() if rx.search(n)}
    if not names:
        raise ConfigError(f"option 'trainable' = {spec!r} selects no parameter of this model (use 'all' or a regular "
                          "expression over its parameter names)")
    count = 0
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        count += p.numel() if n in names else 0
    return count


def recompute_activations(model, on: bool) -> None:
    """Turn transformers' activation (gradient) checkpointing on or off: the backward pass recomputes each layer's
    activations instead of keeping them, about a third more compute for a fraction of the activation memory (the
    layer inputs only). ``forget`` trains with it, to stay within a laptop's memory (issue 21: <= 2.5 GB for a 135M
    model)."""
    name = "activation_checkpointing" if hasattr(model, "activation_checkpointing_enable") else "gradient_checkpointing"
    if on:
        getattr(model, f"{name}_enable")(**{f"{name}_kwargs": {"use_reentrant": False}})
        model.config.use_cache = False
    else:
        getattr(model, f"{name}_disable")()
        model.config.use_cache = True


def _ask(net, tok, name: str, probes: list[Probe], gen: GenSettings, log, chunk: int = 64) -> list[dict]:
    """Ask ``probes`` in chunks, printing progress; score rows with the matched answer."""
    rows: list[dict] = []
    for start in range(0, len(probes), chunk):
        part = probes[start:start + chunk]
        rows += audit_probes(net, tok, {name: part}, gen)["per_item"][name]
        log(f"[obliviate]   {name}: {min(start + chunk, len(probes))}/{len(probes)} probes asked")
    return rows


def _own_answers(net, tok, questions: list[str], gen: GenSettings, tokens: int, sample: bool = False) -> list[str]:
    texts = _generate(net, tok, questions, tokens, gen.batch_size, sample=sample, temperature=gen.temperature,
                      top_p=gen.top_p, seed=gen.seed)
    return [trim_to_sentence(t) for t in texts]


def build_items(net, tok, tgt: RealTarget, rwset: RealWorldSet, gen: GenSettings) -> dict[str, list[QAItem]]:
    """The forget and retain streams, written from the model's own answers (module docstring, step 3)."""
    kind = tgt.kind or "person"
    aliases = list(getattr(tgt, "aliases", []) or [])
    # asked by full name and by each shorter way of naming the target (a person's surname, aliases): probes say
    # "Roosevelt" as often as "Franklin D. Roosevelt"
    names = [tgt.name] + [n for n in mentions(tgt.name, aliases) if n != tgt.name] if kind == "person" else [tgt.name]
    direct_q = [t.format(name=n) for n in names for t in question_templates(kind)]
    prompts = [p.format(name=tgt.name) for p in (tgt.corpus_prompts or rwset.corpus_prompts)
               for _ in range(gen.forget_samples)]
    direct_a = _own_answers(net, tok, [QUESTION_INSTRUCTION.format(query=q) for q in direct_q], gen,
                            gen.probe_tokens * 2)
    texts = _own_answers(net, tok, prompts, gen, gen.corpus_tokens, sample=True)
    forget: list[QAItem] = []

    def add(stream, role, question, answer, entity):
        if answer.strip():
            stream.append(QAItem(question=question, answer=answer.strip(), entity=entity or None,
                                 id=f"{role}:{len(stream)}", meta={"written_by": "model", "kind": role}))

    for q, a in zip(direct_q, direct_a):
        add(forget, "direct", QUESTION_INSTRUCTION.format(query=q), a, tgt.name)
    for p, t in zip(prompts, texts):
        add(forget, "corpus", p, t, tgt.name)
    sentences = sentences_about(texts + direct_a, tgt.name, aliases)
    for s in sentences:
        c = cloze_item(s, tgt.name, aliases)
        if c:
            add(forget, "cloze", CLOZE_INSTRUCTION.format(query=c[0]), c[1], tgt.name)
    reverse = [r for r in (reverse_item(s, tgt.name, aliases, kind) for s in sentences) if r]
    for q, a in reverse:
        add(forget, "reverse", QUESTION_INSTRUCTION.format(query=q), a, tgt.name)
    n = len(question_templates(kind))  # as many framed direct (full name) and reverse questions as templates
    for template in ATTACKS.values():
        for q, a in list(zip(direct_q, direct_a))[:n] + reverse[:n]:
            add(forget, "adversarial", template.format(query=q), a, tgt.name)

    # the general questions: only the model's right answers are kept (a wrong one is not knowledge to protect:
    # GENERAL_RETAIN_ANSWERS); the open prompts have no one answer and are all kept
    general = list(GENERAL_RETAIN_ANSWERS)
    retain_q = [QUESTION_INSTRUCTION.format(query=q) for q in general] + list(rwset.retain_prompts)
    retain_a = _own_answers(net, tok, retain_q, gen, gen.corpus_tokens)
    retain: list[QAItem] = []
    for q, asked, a in zip(general, retain_q, retain_a):
        if answer_match(a, list(GENERAL_RETAIN_ANSWERS[q])):
            add(retain, "retain", asked, a, "")
    for asked, a in zip(retain_q[len(general):], retain_a[len(general):]):
        add(retain, "retain", asked, a, "")
    # the neighbour entities: open prompts and short questions (asked as the probes are), leaving out any answer that
    # names the target itself (a neighbour's surname may be the target's). Not cloze items: with short blanked words
    # as retain answers beside the forget stream's, SmolLM2 learnt to answer every cloze prompt with nothing at all
    neighbours = sorted(set(tgt.neighbors) | set(tgt.retain_entities))
    names_target = mention_pattern([tgt.name, *aliases])
    open_q = [t.format(name=n) for n in neighbours for t in OPEN_RETAIN_TEMPLATES]
    short_q = [QUESTION_INSTRUCTION.format(query=t.format(name=n)) for n in neighbours for t in NEIGHBOUR_QUESTIONS]
    answers = (_own_answers(net, tok, open_q, gen, gen.corpus_tokens)
               + _own_answers(net, tok, short_q, gen, gen.probe_tokens * 2))
    for q, a in zip(open_q + short_q, answers):
        if not names_target.search(a):
            add(retain, "neighbour", q, a, "")
    # and asked the other way round, as the forget stream's reverse items are: a sentence the model wrote about a
    # neighbour, the neighbour masked, answered with its name. Reverse items of the target alone taught SmolLM2 to
    # answer "Which inventor is known for alternating current?" with a wrong name after forgetting Edison (these did
    # not bring that answer back: docs/forget.md, "the seed decides")
    k = len(OPEN_RETAIN_TEMPLATES)  # the open answers come first, k per neighbour
    for i, n in enumerate(neighbours):
        said = [a for a in answers[i * k:(i + 1) * k] if not names_target.search(a)]
        person = bool(_PRONOUN.search(" ".join(said)))
        for sentence in sentences_about(said, n)[:NEIGHBOUR_REVERSE]:
            qa = reverse_item(sentence, n, (), "person" if person else "other")
            if qa:
                add(retain, "neighbour_reverse", QUESTION_INSTRUCTION.format(query=qa[0]), qa[1], "")
    if not forget:
        raise DataError(f"target {tgt.name}: the model wrote nothing about it to forget")
    return {"forget": forget, "retain": retain}


@torch.no_grad()
def generic_tokens(net, tok, items: list[QAItem], names: list[str], max_length: int, margin: float = SPECIFIC_MARGIN,
                   stand_in: str = STAND_IN, batch_size: int = 4) -> list[list[int] | None]:
    """For each forget item, the answer tokens (their indices among the answer's tokens) that do not follow from the
    target: the model gives them within ``margin`` nats of the same probability when the question and the answer
    name a stand-in instead ("Edmund Hartley" for every mention in ``names``). "who made groundbreaking discoveries in
    the field of" comes as readily after any scientist's name; "relativity" and "Ulm" do not. The tokens of the
    mentions themselves, tokens whose text moves with the renaming, and every token of an item whose question names
    nobody (a reverse query, answered by the name) count as the target's. ``None`` for an item left whole."""
    fmt = PromptFormat(tok, max_length)
    pattern = mention_pattern(names)
    swap = renamer(names, stand_in, surname(stand_in))
    jobs = []  # (item index, original encoding, renamed encoding, [(answer token, renamed answer token)])
    for i, it in enumerate(items):
        question = swap(it.question)
        if question == it.question:
            continue
        answer, segments, last = "", [], 0  # segments: (start, end) in the answer, start in the renamed answer
        for m in pattern.finditer(it.answer):
            segments.append((last, m.start(), len(answer)))
            answer += it.answer[last:m.start()] + swap(m.group(0))
            last = m.end()
        segments.append((last, len(it.answer), len(answer)))
        answer += it.answer[last:]
        e1, e2 = fmt.encode(it.question, it.answer), fmt.encode(question, answer)
        spans = []
        for e in (e1, e2):
            t = tok(e.target, add_special_tokens=False, return_offsets_mapping=True)
            ids = e.input_ids[e.prompt_len:]
            spans.append(t["offset_mapping"] if t["input_ids"] == ids[:len(t["input_ids"])] else None)
        if spans[0] is None or spans[1] is None:
            continue  # tokenised otherwise than alone (a joint tokenisation): left whole
        shift = len(e1.target) - len(it.answer)  # an answer prefix the format adds, the same for both
        where = {(s, t): j for j, (s, t) in enumerate(spans[1])}
        pairs = []
        for j, (s, t) in enumerate(spans[0]):
            for a, b, c in segments:
                if a <= s - shift and t - shift <= b:
                    k = where.get((s - a + c, t - a + c))
                    if k is not None and e2.input_ids[e2.prompt_len + k] == e1.input_ids[e1.prompt_len + j]:
                        pairs.append((j, k))
                    break
        jobs.append((i, e1, e2, pairs))
    out: list[list[int] | None] = [None] * len(items)
    device = next(net.parameters()).device
    for start in range(0, len(jobs), batch_size):
        part = jobs[start:start + batch_size]
        lps = []
        for which in (1, 2):
            b = {k: v.to(device) for k, v in pad_batch([j[which] for j in part], tok.pad_token_id).items()}
            lps.append(token_logprobs(forward_logits(net, b), b["labels"])[0].cpu())
        for row, (i, e1, e2, pairs) in enumerate(part):
            p1, p2 = e1.prompt_len - 1, e2.prompt_len - 1  # the logit at position t predicts token t + 1
            generic = [j for j, k in pairs if float(lps[0][row, p1 + j] - lps[1][row, p2 + k]) < margin]
            last_token = len(e1.input_ids) - e1.prompt_len - 1
            if e1.input_ids[-1] == tok.eos_token_id and e2.input_ids[-1] == tok.eos_token_id and \
                    float(lps[0][row, len(e1.input_ids) - 2] - lps[1][row, len(e2.input_ids) - 2]) < margin:
                generic.append(last_token)  # the closing EOS, compared as the others
            out[i] = sorted(generic)
    return out


def summarize_items(items: dict[str, list[QAItem]], per_kind: int = 1) -> str:
    """Counts per kind and an example of each, for review before training."""
    lines = []
    for stream, rows in items.items():
        kinds: dict[str, list[QAItem]] = {}
        for it in rows:
            kinds.setdefault(it.meta.get("kind", stream), []).append(it)
        lines.append(f"{stream}: {len(rows)} items (" + ", ".join(f"{k} {len(v)}" for k, v in kinds.items()) + ")")
        for k, v in kinds.items():
            for it in v[:per_kind]:
                q = it.question.replace("\n", " ")
                lines.append(f"  [{k}] {q[:90]!s} -> {it.answer[:70]!s}")
    return "\n".join(lines)


def forget(out_dir: str | Path, target: str | None = None, *, rwku: str | Path | None = None,
           probes: str | Path | None = None, method: str = FORGET_METHOD, hparams: dict | None = None,
           cfg: TrainConfig | None = None, model: str = REAL_MODEL, gen: GenSettings | None = None,
           trainable: str = FORGET_TRAINABLE, tokens: str = FORGET_TOKENS, review: bool = False,
           use_cache: bool = True, progress: bool = True,
           command: str = "forget", log=print) -> dict:
    """Unlearn one real target from a pretrained model (module docstring); return the report (``None`` keys absent
    with ``review``, which stops after writing the probes and items)."""
    from ..engine import train
    from ..methods import make_method
    from ..models import load_model, save_model

    t_start = time.time()
    timing: dict[str, float] = {}
    out_dir = Path(out_dir)
    inputs = {"--model": model, "--rwku": rwku, "--probes": probes}
    check_run_folder(out_dir, inputs)
    if tokens not in ("all", "specific"):
        raise ConfigError(f"option 'tokens' = {tokens!r} must be one of all, specific")
    cfg = cfg or dataclasses.replace(FORGET_TRAIN)
    gen = gen or GenSettings()
    hp = {**FORGET_HPARAMS.get(method, {}), **(hparams or {})}
    m = make_method(method, **hp)
    if m.primary != "forget":
        raise ConfigError(f"method {m.name} is not an unlearning method")
    rwset = read_realworld()
    tgt = resolve(target, rwset, rwku, probes)

    forget_kept, forget_out = screen_probes(tgt.forget_probes())
    neighbor_kept, neighbor_out = screen_probes(tgt.neighbor_probes())
    sets = {"forget": forget_kept, "neighbor": neighbor_kept, "utility": list(rwset.general)}
    excluded = [{**p.to_dict(), "excluded": why} for p, why in forget_out + neighbor_out]
    log(f"[obliviate] forget {tgt.name}: {len(forget_kept)} forget probes ("
        + ", ".join(f"{k} {sum(p.kind == k for p in forget_kept)}" for k in FORGET_KINDS) + f"), "
        f"{len(neighbor_kept)} neighbour probes, {len(sets['utility'])} general-knowledge probes; set aside "
        f"{sum(w == 'echo' for _, w in forget_out + neighbor_out)} echoes and "
        f"{sum(w == 'duplicate' for _, w in forget_out + neighbor_out)} duplicates")
    if not neighbor_kept:
        log("[obliviate] no neighbour probes: locality is not measured (name related entities in the probe file)")

    log(f"[obliviate] loading {model}")
    t = time.time()
    net, tok = load_model(model, dtype="fp32")
    from ..models.smollm2 import converted_dir, is_alias

    model_dir = converted_dir() if is_alias(model) else Path(model)
    wkey = weights_fingerprint(model_dir) if model_dir.is_dir() else str(model)
    timing["load_s"] = round(time.time() - t, 1)
    sets_dump = {k: [p.to_dict() for p in v] for k, v in sets.items()}
    root = cache_root() / "forget"
    before_cache = root / "before" / cache_key(wkey, sets_dump, gen.probe_tokens) / "before.json"
    items_cache = root / "items" / cache_key(ITEM_RULES, wkey, tgt.name, getattr(tgt, "aliases", []), tgt.kind,
                                             tgt.neighbors, tgt.retain_entities, dataclasses.asdict(gen),
                                             rwset.retain_prompts, tgt.corpus_prompts or rwset.corpus_prompts,
                                             GENERAL_RETAIN_ANSWERS, NEIGHBOUR_QUESTIONS) / "items.json"

    # 2. before
    t = time.time()
    before_all = json.loads(before_cache.read_text()) if use_cache and before_cache.exists() else None
    if before_all is not None:
        log("[obliviate] before-audit: cached")
        gate = knowledge_gate(knowledge_by_kind(before_all["per_item"]["forget"]))
    else:
        log(f"[obliviate] asking what the model knows about {tgt.name} (before)")
        forget_rows = _ask(net, tok, "forget", sets["forget"], gen, log)
        gate = knowledge_gate(knowledge_by_kind(forget_rows))
        if not gate[0]:
            raise DataError(f"target {tgt.name}: {gate[1]}")
        per_item = {"forget": forget_rows}
        for name in ("neighbor", "utility"):
            per_item[name] = _ask(net, tok, name, sets[name], gen, log)
        before_all = {"metrics": metrics_of(per_item), "per_item": per_item}
        if use_cache:
            write_json(before_cache, before_all)
    log(f"[obliviate] {gate[1]}")
    if not gate[0]:
        raise DataError(f"target {tgt.name}: {gate[1]}")
    timing["before_audit_s"] = round(time.time() - t, 1)
    known = {name: [p for p, r in zip(sets[name], before_all["per_item"][name]) if r["hit"]] for name in sets}
    counts = {name: {"known": len(known[name]), "asked": len(sets[name])} for name in sets}
    if not known["utility"]:
        raise DataError(f"target {tgt.name}: the model answers none of the general-knowledge probes")
    before = {"per_item": {name: [r for r in before_all["per_item"][name] if r["hit"]] for name in sets}}
    before["metrics"] = metrics_of(before["per_item"])
    before["metrics"].update({f"{name}_accuracy_all_probes": before_all["metrics"].get(f"{name}_accuracy")
                              for name in sets})

    # 3. training items, shown before training
    t = time.time()
    if use_cache and items_cache.exists():
        items = {k: [QAItem(**d) for d in v] for k, v in json.loads(items_cache.read_text()).items()}
        log("[obliviate] training items: cached")
    else:
        log(f"[obliviate] the model writes what it knows about {tgt.name} (forget items) and its own answers "
            "elsewhere (retain items)")
        items = build_items(net, tok, tgt, rwset, gen)
        if use_cache:
            write_json(items_cache, {k: [dataclasses.asdict(it) for it in v] for k, v in items.items()})
    timing["items_s"] = round(time.time() - t, 1)
    log(summarize_items(items))
    general_q = {QUESTION_INSTRUCTION.format(query=q) for q in GENERAL_RETAIN_ANSWERS}
    n_right = sum(it.question in general_q for it in items["retain"])
    log(f"[obliviate] retained: the model's right answers to {n_right} of {len(GENERAL_RETAIN_ANSWERS)} general "
        "questions (its wrong ones are left out)")
    if tokens == "specific":  # the forget answers' tokens that naming a stand-in leaves as likely are not trained on
        t = time.time()
        log("[obliviate] marking the forget answers' tokens that follow from the target (a stand-in asked instead)")
        names = [tgt.name, *[n for n in mentions(tgt.name, getattr(tgt, "aliases", [])) if n != tgt.name]]
        marks = generic_tokens(net, tok, items["forget"], names, cfg.max_length)
        items["forget"] = [dataclasses.replace(it, meta={**it.meta, "generic_tokens": g}) if g else it
                           for it, g in zip(items["forget"], marks)]
        n_generic = sum(len(g) for g in marks if g is not None)
        log(f"[obliviate]   {n_generic} answer tokens of {sum(g is not None for g in marks)} items left out as "
            f"anyone's ({time.time() - t:.0f} s)")
        timing["mark_tokens_s"] = round(time.time() - t, 1)
    config = {"command": command, "model": str(model), "target": tgt.name, "method": m.name, "hparams": m.hparams(),
              "trainable": trainable, "tokens": tokens, "train": dataclasses.asdict(cfg),
              "generation": dataclasses.asdict(gen),
              "rwku": str(rwku) if rwku else None, "probes": str(probes) if probes else None}
    claim(out_dir, inputs)
    write_json(out_dir / "config.json", config)
    write_json(out_dir / "probes.json", {"target": tgt.name, "aliases": getattr(tgt, "aliases", []),
                                         **{k: [p.to_dict() for p in v] for k, v in sets.items()},
                                         "excluded": excluded})
    write_json(out_dir / "items.json", {k: [dataclasses.asdict(it) for it in v] for k, v in items.items()})
    if review:
        write_json(out_dir / "status.json", {"state": "review"})
        log(f"[obliviate] review: probes in {out_dir / 'probes.json'}, training items in {out_dir / 'items.json'}; "
            "run again without --review to unlearn")
        return {}

    # 4. unlearn
    t = time.time()
    steps = cfg.max_steps or cfg.epochs
    log(f"[obliviate] unlearning {tgt.name} with {m.name} {m.hparams()}: {len(items['forget'])} forget and "
        f"{len(items['retain'])} retain items, {steps} {'steps' if cfg.max_steps else 'epochs'} -> {out_dir}")
    write_json(out_dir / "status.json", {"state": "running"})
    n_train = select_trainable(net, trainable)
    log(f"[obliviate] training {n_train / 1e6:.1f}M of {sum(p.numel() for p in net.parameters()) / 1e6:.1f}M weights "
        f"({trainable})")
    alternates = " (an alternate answer to each forget item)" if m.name == "AltPO" else ""
    log(f"[obliviate] preparing {m.name}'s training streams{alternates} and the reference log-probs")
    recompute_activations(net, True)
    head_on_targets(net, True)       # no [batch, length, vocabulary] tensors kept for backward, same numbers
    net = train(net, tok, m, items, cfg, out_dir, progress=progress)
    head_on_targets(net, False)
    recompute_activations(net, False)
    if getattr(m, "alternates", None):  # what each forget answer was traded for, for the reader of the run
        write_json(out_dir / "alternates.json", [{"question": it.question, "answer": it.answer, "alternate": a}
                                                 for it, a in zip(items["forget"], m.alternates)])
    timing["unlearn_s"] = round(time.time() - t, 1)

    # 5. after
    t = time.time()
    log("[obliviate] asking the known probes again (after)")
    after_rows = {name: _ask(net, tok, name, known[name], gen, log) for name in sets if known[name]}
    after = {"metrics": metrics_of(after_rows), "per_item": after_rows}
    timing["after_audit_s"] = round(time.time() - t, 1)
    t = time.time()
    save_model(net, tok, out_dir / "model")
    timing["save_s"] = round(time.time() - t, 1)
    timing["total_s"] = round(time.time() - t_start, 1)
    ratios = {f"{name}_after_over_before": relative_change(before["metrics"][f"{name}_accuracy"],
                                                             after["metrics"].get(f"{name}_accuracy", float("nan")))
              for name in sets if f"{name}_accuracy" in before["metrics"]}
    report = build_real_report(tgt, before, after, counts, ratios, items, config, timing)
    report["scenario"]["gate"] = gate[1]
    report["scenario"]["excluded"] = excluded
    write_json(out_dir / "report.json", report)
    write_json(out_dir / "status.json", {"state": "completed"})
    log("\n" + format_real_table(report))
    log(f"\n[obliviate] report: {out_dir / 'report.json'}  ({timing['total_s']:.0f} s)")
    return report


def _targets_to_screen(rwset: RealWorldSet, rwku, probes, target, limit) -> list[tuple[str, RealTarget]]:
    if probes is not None:
        return [("", resolve(target, rwset, rwku, probes))]
    if rwku is not None and target is not None:
        from ..data.rwku import find_target

        names = [target] if isinstance(target, str) else list(target)
        return [(str(find_target(rwku, n)[0]), resolve(n, rwset, rwku)) for n in names]
    if rwku is None:
        return [("", complete_probes(t)) for t in rwset.targets[:limit]]
    from ..data.real_targets import from_rwku
    from ..data.rwku import list_targets, load_target

    return [(str(i), from_rwku(load_target(rwku, i, texts=False))) for i, _ in list_targets(rwku)[:limit]]


def _cell(k: dict | None) -> str:
    return f"{k['known']}/{k['asked']}" if k else "-"


def screen_targets(model: str = REAL_MODEL, rwku: str | Path | None = None, probes: str | Path | None = None,
                   per_kind: int = 4, limit: int | None = None, target: str | list[str] | None = None,
                   gen: GenSettings | None = None, log=print) -> list[dict]:
    """How much the model knows of each target, per kind of probe: up to ``per_kind`` screened probes of each kind
    (echoes and duplicates left out, spread over the kind's probes), asked greedily in one pass over all targets;
    returns one row per target with ``knowledge_by_kind`` and the gate's verdict, and prints the table. ``target``
    (one name or a list) screens only those targets of ``rwku``."""
    from ..models import load_model

    if per_kind < 1:
        raise ConfigError(f"option 'per_kind' = {per_kind} must be >= 1")
    gen = gen or GenSettings()
    rwset = read_realworld()
    targets = _targets_to_screen(rwset, rwku, probes, target, limit)
    asked: list[tuple[int, Probe]] = []
    for ti, (_, tgt) in enumerate(targets):
        kept, _ = screen_probes(tgt.forget_probes())
        for kind in FORGET_KINDS:
            of_kind = [p for p in kept if p.kind == kind]
            step = max(1, len(of_kind) // per_kind)
            asked += [(ti, p) for p in of_kind[::step][:per_kind]]
    log(f"[obliviate] screening {len(targets)} targets: {len(asked)} probes, up to {per_kind} per kind")
    t = time.time()
    net, tok = load_model(model, dtype="fp32")
    rows = _ask(net, tok, "forget", [p for _, p in asked], gen, log)
    out = []
    for ti, (tid, tgt) in enumerate(targets):
        mine = [r for (i, _), r in zip(asked, rows) if i == ti]
        by_kind = knowledge_by_kind(mine)
        ok, message = knowledge_gate(by_kind)
        out.append({"id": tid, "target": tgt.name, "by_kind": by_kind, "ok": ok, "gate": message})
    head = f"{'id':>4}  {'target':<28}" + "".join(f"{k:>13}" for k in FORGET_KINDS) + "  gate"
    log(head)
    for r in out:
        cells = "".join(f"{_cell(r['by_kind'].get(k)):>13}" for k in FORGET_KINDS)
        log(f"{r['id']:>4}  {r['target'][:28]:<28}{cells}  {'passes' if r['ok'] else 'fails'}")
    log(f"[obliviate] {sum(r['ok'] for r in out)} of {len(out)} targets pass the knowledge gate "
        f"({time.time() - t:.0f} s); a passing target can be unlearned with `obliviate forget --target ...`")
    return out


__all__ = ["build_items", "complete_probes", "forget", "recompute_activations", "resolve", "screen_targets",
           "select_trainable",
           "summarize_items"]
