"""Reasoning traces: the synthetic trace benchmark, the segment finder and placeholder replacement, TraceReplace's
feature replacement loss against a hand computation, and on a tiny model trained on the traces: the forget facts leave
both trace and answer while the steps without facts stay (ROUGE) and the retain traces keep working."""

import math
import re

import pytest
import torch
from conftest import SMALL_TINY

from obliviate.config import TrainConfig
from obliviate.data import PromptFormat, pad_batch
from obliviate.data.traces import forget_steps, make_traces, parse_trace, replaced_trace
from obliviate.engine import train
from obliviate.errors import DataError
from obliviate.methods import make_method
from obliviate.methods.trace_replace import score_traces, suppressed_positions
from obliviate.scoring.passes import generate_answers


@pytest.fixture(scope="module")
def traces():
    return make_traces()


@pytest.fixture(scope="module")
def trace_tiny(traces):
    from obliviate.models import TinyConfig, tiny_from_texts

    texts = [it.question + " " + it.answer for split in traces.values() for it in split] + ["unknown"]
    return tiny_from_texts(texts, TinyConfig(**SMALL_TINY))


@pytest.fixture(scope="module")
def trace_trained(traces, trace_tiny, tmp_path_factory):
    """The tiny model fine-tuned on every trace (about 20 s); saved, so tests load fresh copies."""
    from obliviate.models import save_model

    model, tok = trace_tiny
    cfg = TrainConfig(lr=5e-3, epochs=60, batch_size=8, warmup_ratio=0.05, scheduler="linear")
    model = train(model, tok, make_method("finetune"), {"train": traces["forget"] + traces["retain"]}, cfg,
                  tmp_path_factory.mktemp("trace-ft"), progress=False)
    out = tmp_path_factory.mktemp("trace-model")
    save_model(model, tok, out)
    return out


def test_trace_benchmark_marks_exactly_the_steps_with_forget_facts(traces):
    forget, retain = traces["forget"], traces["retain"]
    assert len(forget) == 9 and len(retain) == 27
    forget_years = {f for it in forget for f in it.meta["facts"] if len(f) == 4}
    for it in forget:
        steps, facts = it.meta["steps"], it.meta["facts"]
        want = [i for i, s in enumerate(steps) if any(f in re.findall(r"\w+", s) for f in facts)]
        assert forget_steps(steps, facts) == want and 0 < len(want) < len(steps)  # some steps keep no fact
        assert parse_trace(it.answer) == (steps, it.meta["final"])
        new = replaced_trace(it, "unknown")
        new_steps, new_final = parse_trace(new)
        assert len(new_steps) == len(steps) and new_final == "unknown"
        for i, (a, b) in enumerate(zip(steps, new_steps)):
            assert (a == b) == (i not in want)
            assert not any(f in re.findall(r"\w+", b) for f in facts)
    for it in retain:  # no retain trace reveals a forget person's year
        assert not it.meta["facts"] and not any(y in it.answer for y in forget_years)


def test_feature_replacement_loss_by_hand(traces, trace_tiny):
    model, tok = trace_tiny
    model = model.train()
    fmt = PromptFormat(tok)
    items = traces["forget"][:3]
    gamma, beta, alpha = 1.5, 0.7, 0.4
    method = make_method("TraceReplace", gamma=gamma, beta=beta, alpha=alpha)
    data = method.setup(model, tok, {"forget": items, "retain": traces["retain"][:2]})
    enc = {k: pad_batch([fmt.encode(it.question, it.answer) for it in data[k]], tok.pad_token_id)
           for k in ("forget", "forget_replaced", "retain")}
    mask = suppressed_positions(enc["forget"]["labels"], enc["forget_replaced"]["labels"])
    # the mask by hand: its runs of tokens decode to the facts, one run per fact occurrence in steps and answer
    for b, it in enumerate(items):
        runs, cur = [], []
        for t in range(mask.shape[1]):
            if mask[b, t]:
                cur.append(int(enc["forget"]["input_ids"][b, t]))
            elif cur:
                runs.append(tok.decode(cur).strip(" .")), cur.clear()
        occurrences = sum(re.findall(r"\w+", s).count(f) for s in it.meta["steps"] + [it.meta["final"]]
                          for f in it.meta["facts"])
        assert len(runs) == occurrences and all(r in it.meta["facts"] for r in runs), (runs, it.meta["facts"])
    loss, logs = method.loss(model, enc, None)

    def logits(b):
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.detach().double()

    lf, lr, lt = logits(enc["forget"]), logits(enc["forget_replaced"]), logits(enc["retain"])
    sup = [-math.log(1 - math.exp(float(torch.log_softmax(lf[b, t - 1], 0)[enc["forget"]["labels"][b, t]])))
           for b in range(mask.shape[0]) for t in range(1, mask.shape[1]) if mask[b, t]]

    def nll(lg, labels):
        v = [float(-torch.log_softmax(lg[b, t - 1], 0)[labels[b, t]]) for b in range(labels.shape[0])
             for t in range(1, labels.shape[1]) if labels[b, t] != -100]
        return sum(v) / len(v)

    s, r, ret = sum(sup) / len(sup), nll(lr, enc["forget_replaced"]["labels"]), nll(lt, enc["retain"]["labels"])
    assert logs["suppress"] == pytest.approx(s, rel=1e-4) and logs["reinforce"] == pytest.approx(r, rel=1e-4)
    assert loss.item() == pytest.approx(gamma * (s + beta * r) + alpha * ret, rel=1e-4)


def test_trace_replace_removes_facts_from_trace_and_answer_and_keeps_the_structure(traces, trace_trained, tmp_path):
    from obliviate.models import load_model

    model, tok = load_model(trace_trained, dtype="fp32", device="cpu")
    fmt = PromptFormat(tok)

    def evaluate(m):
        return {k: score_traces(generate_answers(m, tok, fmt, [it.question for it in traces[k]], max_new_tokens=60),
                                traces[k]) for k in ("forget", "retain")}

    before = evaluate(model)
    cfg = TrainConfig(lr=1e-3, max_steps=30, batch_size=4, scheduler="constant")
    model = train(model, tok, make_method("TraceReplace"), {"forget": traces["forget"], "retain": traces["retain"]},
                  cfg, tmp_path, progress=False)
    after = evaluate(model)
    print("before", before, "\nafter", after)
    assert before["forget"]["trace_leak"] == 1.0 and before["forget"]["answer_leak"] == 1.0
    assert after["forget"]["trace_leak"] == 0.0 and after["forget"]["answer_leak"] == 0.0
    assert after["forget"]["kept_step_rouge"] >= 0.95 and after["forget"]["step_count_match"] == 1.0
    assert after["retain"]["answer_correct"] >= 0.75 and after["retain"]["kept_step_rouge"] >= 0.95


def test_trace_replace_needs_trace_items(small_bench, trace_tiny):
    model, tok = trace_tiny
    with pytest.raises(DataError, match="field 'steps' is missing"):
        make_method("TraceReplace").setup(model, tok, {"forget": small_bench.forget[:2], "retain": []})


def test_trace_benchmark_rejects_impossible_sizes():
    from obliviate.data.traces import TraceConfig
    from obliviate.errors import ConfigError

    with pytest.raises(ConfigError, match="n_people <= 70"):
        make_traces(TraceConfig(n_people=80))
    with pytest.raises(ConfigError, match="n_forget"):
        make_traces(TraceConfig(n_people=3, n_forget=3))
