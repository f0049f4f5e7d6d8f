"""Continual learning (``obliviate learn``) and the learn/forget request stream (``obliviate requests``).

Every metric and loss is checked against a hand computation written here; the strategies are checked on a real tiny
model learning two tasks of new authors.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from obliviate.continual import evaluate as E
from obliviate.continual import losses as L

R3 = [[0.9, 0.1, 0.2],
      [0.6, 0.8, 0.3],
      [0.5, 0.7, 0.95]]
BASE3 = [0.05, 0.1, 0.15]


def test_sequence_metrics_by_hand():
    assert E.average_accuracy(R3) == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert E.backward_transfer(R3) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert E.forward_transfer(R3, BASE3) == pytest.approx(((0.1 - 0.1) + (0.3 - 0.15)) / 2)
    # task 0 ends at step 10, task 1 at 20; evaluations every 5 steps
    curves = [[(0, 0.0), (5, 0.5), (10, 0.9), (15, 0.2), (20, 0.6), (25, 0.4), (30, 0.5)],
              [(0, 0.1), (5, 0.1), (10, 0.1), (15, 0.6), (20, 0.8), (25, 0.3), (30, 0.7)],
              [(0, 0.2)] * 6 + [(30, 0.95)]]
    low = E.min_acc(curves, [10, 20, 30])
    assert low == pytest.approx((0.2 + 0.3) / 2)  # the dips after each task ended, not the end-of-task values
    assert E.wc_acc(0.95, low, 3) == pytest.approx(0.95 / 3 + (2 / 3) * 0.25)
    assert E.retention(0.45, 0.9) == pytest.approx(0.5)
    assert math.isnan(E.min_acc(curves[:1], [10]))  # one task: no earlier task to dip
    assert E.backward_transfer([[0.7]]) == 0.0


def test_answer_prob_accuracy_by_hand(random_model, small_bench):
    from obliviate.data import PromptFormat

    model, tok = random_model
    items = small_bench.full[:3]
    fmt = PromptFormat(tok)
    per_item = []
    for it in items:
        e = fmt.encode(it.question, it.answer)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
        lps = []
        for t in range(1, len(e.input_ids)):
            if e.labels[t] != -100:
                lps.append(float(torch.log_softmax(logits[t - 1].double(), -1)[e.labels[t]]))
        per_item.append(math.exp(sum(lps) / len(lps)))
    assert E.accuracy(model, tok, items) == pytest.approx(sum(per_item) / 3, rel=1e-4)


def test_ewc_penalty_by_hand():
    g = torch.Generator().manual_seed(0)
    params = {"a": torch.randn(3, generator=g), "b": torch.randn(2, 2, generator=g)}
    anchors = {"a": torch.randn(3, generator=g)}  # b has no anchor: free
    fisher = {"a": torch.rand(3, generator=g)}
    want = 0.0
    for i in range(3):
        want += float(fisher["a"][i]) * (float(params["a"][i]) - float(anchors["a"][i])) ** 2
    assert float(L.ewc_penalty(params, anchors, fisher, 7.0)) == pytest.approx(7.0 / 2 * want, rel=1e-5)


def test_kl_feature_and_tm_losses_by_hand():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float)
    kls = []
    for b in range(2):
        for i in range(3):
            if mask[b, i]:
                p = np.exp(t[b, i].double().numpy()) / np.exp(t[b, i].double().numpy()).sum()
                q = np.exp(s[b, i].double().numpy()) / np.exp(s[b, i].double().numpy()).sum()
                kls.append(float((p * np.log(p / q)).sum()))
    assert float(L.masked_kl(s, t, mask)) == pytest.approx(np.mean(kls), rel=1e-5)

    h, h0 = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    d1, d2, ref_vals = [], [], []
    for b in range(2):
        for i in range(3):
            if mask[b, i]:
                for k in range(4):
                    d1.append(abs(float(h[b, i, k] - h0[b, i, k])))
                    d2.append(float(h[b, i, k] - h0[b, i, k]) ** 2)
                    ref_vals.append(float(h0[b, i, k]))
    assert float(L.masked_feature_distance(h, h0, mask, "l1")) == pytest.approx(np.mean(d1), rel=1e-5)
    assert float(L.masked_feature_distance(h, h0, mask, "l2")) == pytest.approx(np.mean(d2), rel=1e-5)

    q = 0.25
    tau_pos, tau_neg = np.quantile(ref_vals, 1 - q), np.quantile(ref_vals, q)
    pens = []
    for b in range(2):
        for i in range(3):
            if mask[b, i]:
                for k in range(4):
                    a0, a = float(h0[b, i, k]), float(h[b, i, k])
                    if a0 >= tau_pos:
                        pens.append(max(0.0, tau_pos - a))
                    elif a0 <= tau_neg:
                        pens.append(max(0.0, a - tau_neg))
    assert float(L.tm_loss(h, h0, mask, q)) == pytest.approx(np.mean(pens), rel=1e-5)
    assert float(L.tm_loss(h0, h0, mask, q)) == 0.0  # a model in the reference's states pays nothing


def test_empirical_fisher_by_hand(random_model, small_bench):
    from obliviate.continual.strategies.ewc import empirical_fisher
    from obliviate.data import PromptFormat

    model, tok = random_model
    model = copy.deepcopy(model)
    items = small_bench.full[:2]
    fisher = empirical_fisher(model, tok, items)
    fmt = PromptFormat(tok)
    name, param = [(n, p) for n, p in model.named_parameters() if p.dim() == 2][-1]  # the last layer's matrix
    want = torch.zeros_like(param)
    for it in items:
        e = fmt.encode(it.question, it.answer)
        logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
        targets = [(t, e.labels[t]) for t in range(1, len(e.labels)) if e.labels[t] != -100]
        nll = -sum(torch.log_softmax(logits[t - 1], -1)[y] for t, y in targets) / len(targets)
        (grad,) = torch.autograd.grad(nll, param)
        want += grad.square() / 2
    torch.testing.assert_close(fisher[name], want, rtol=1e-4, atol=1e-10)


def test_split_tasks_deals_whole_new_authors(small_bench):
    from obliviate.continual.tasks import split_tasks

    tasks = split_tasks(small_bench, 5)
    assert [t.name for t in tasks] == [f"task{i}" for i in range(1, 6)]
    authors = [set(t.authors) for t in tasks]
    assert all(len(a) == 4 for a in authors)  # 20 authors / 5
    assert all(not (authors[i] & authors[j]) for i in range(5) for j in range(i + 1, 5))
    assert sum(len(t.items) for t in tasks) == len(small_bench.full)
    assert [len(t.items) for t in split_tasks(small_bench, 5, authors_per_task=2)] == [10] * 5


FAST = dict(lr=5e-3, epochs=40, batch_size=10, warmup_ratio=0.0, scheduler="constant", seed=0)


@pytest.fixture(scope="module")
def two_tasks(small_bench):
    from obliviate.continual.tasks import split_tasks

    return split_tasks(small_bench, 5, authors_per_task=2)[:2]  # 2 tasks of 2 new authors (10 items each)


def test_sequential_forgets_what_replay_keeps(random_model, two_tasks, tmp_path):
    """On a real tiny model: plain fine-tuning on task 2 wipes task 1, replaying task 1's items keeps it; the
    continual evaluation sees every step it was asked to."""
    from obliviate.config import TrainConfig
    from obliviate.continual.runner import run_sequence
    from obliviate.continual.strategies import make_strategy

    model, tok = random_model
    cfg = TrainConfig(**FAST)
    runs = {}
    for name in ("sequential", "replay"):
        runs[name] = run_sequence(copy.deepcopy(model), tok, two_tasks, [], make_strategy(name), cfg,
                                  tmp_path / name, eval_every=10, log=lambda *a: None, sefe=name == "sequential")
    seq, rep = runs["sequential"]["accuracy_matrix"], runs["replay"]["accuracy_matrix"]
    assert seq[0][0] > 0.5 and rep[0][0] > 0.5  # task 1 was learned
    assert seq[1][0] < 0.5 * seq[0][0]  # and plain fine-tuning on task 2 forgot it
    assert rep[1][0] >= 0.8 * rep[0][0]  # replay kept it
    assert seq[1][1] > 0.5 and rep[1][1] > 0.5  # both learned task 2
    r = runs["sequential"]
    assert r["ends"] == [40, 80]
    steps = [e["step"] for e in r["evaluations"]]
    assert set(range(0, 80, 10)) <= set(steps)  # every 10 steps, plus the start and each task's end
    assert r["metrics"]["bwt"] == pytest.approx(seq[1][0] - seq[0][0])
    lows = [e["acc"]["task1"] for e in r["evaluations"] if e["step"] > 40]
    assert r["metrics"]["min_acc"] == pytest.approx(min(lows))
    assert len(r["module_changes"]) == 2 and all(v >= 0 for v in r["module_changes"][0]["change"].values())
    f = r["forgetting_kinds"]["task1"]
    assert f["kept"] + f["superficial"] + f["essential"] == f["learned"]
    assert r["metrics"]["essential_forgetting"] >= f["essential"]

    # the report: the comparison table and the page with its stability-gap plot
    from obliviate.recipes.continual import comparison
    from obliviate.report.continual_page import write_learn_report

    table = comparison(runs)
    assert table[0]["task1_kept"] == pytest.approx(seq[1][0] / seq[0][0])
    report = {"kind": "continual", "model": "tiny", "data": "small", "eval_every": 10, "accuracy": "Q_A_Prob",
              "tasks": [{"name": t.name} for t in two_tasks], "strategies": runs, "table": table}
    (tmp_path / "report.json").write_text(json.dumps(report), encoding="utf-8")
    html = write_learn_report(tmp_path).read_text(encoding="utf-8")
    assert "stability gap" in html and html.count("data:image/png;base64") >= 2 and "task 1 kept" in html


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, expected", [
    ("requests: []", "field 'requests' must be a non-empty list"),
    ("requests:\n  - learn: task9", "request 1: field 'learn': unknown task 'task9'"),
    ("requests:\n  - learn: task1\n  - learn: task1", "request 2: field 'learn': task 'task1' was already learned"),
    ("requests:\n  - forget: Nobody", "request 1: field 'forget': author 'Nobody' was not learned"),
    ("requests:\n  - learn: task1\n  - {learn: task2, forget: x}", "request 2: must be one field"),
    ("requests:\n  - learn: 3", "request 1: field 'learn' must be a name"),
    ("requests:\n  - learn: task1\nforget_method: Nope", "unknown method 'Nope'"),
    ("requests:\n  - learn: task1\nlearn_strategy: replay\nlearn_options: {buffer: 3}", "unknown hyperparameter"),
    ("request: []", "unknown field(s) request"),
])
def test_bad_request_files_are_refused_by_name(small_bench, tmp_path, body, expected):
    from obliviate.continual.requests import parse_requests
    from obliviate.continual.tasks import split_tasks
    from obliviate.errors import ConfigError

    path = _write(tmp_path / "req.yaml", body)
    with pytest.raises(ConfigError) as e:
        parse_requests(path, split_tasks(small_bench, 5))
    assert str(path) in str(e.value) and expected in str(e.value)


def test_bad_request_file_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    from obliviate.cli import main

    path = _write(tmp_path / "req.yaml", "requests:\n  - learn: task1\n  - forget: Nobody Atall\n")
    out = tmp_path / "out"
    assert main(["requests", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "request 2: field 'forget': author 'Nobody Atall'" in lines[0]
    assert "Traceback" not in err and not out.exists()


def test_request_stream_forgets_keeps_and_never_replays_a_forgotten_author(random_model, two_tasks, tmp_path):
    from obliviate.config import TrainConfig
    from obliviate.continual.requests import parse_requests, run_requests
    from obliviate.continual.tasks import Task

    model, tok = random_model
    two_tasks = [two_tasks[0], Task("task2", two_tasks[1].items[:5])]  # task 2: one new author, to keep this fast
    author, other = two_tasks[0].authors
    path = _write(tmp_path / "req.yaml", f"learn_strategy: replay\nforget_method: GradDiff\n"
                                         f"forget_train: {{lr: 0.002, epochs: 10, batch_size: 5}}\n"
                                         f"requests:\n  - learn: task1\n  - forget: {author}\n  - learn: task2\n")
    plan = parse_requests(path, two_tasks)
    rec = run_requests(copy.deepcopy(model), tok, two_tasks, [], plan, TrainConfig(**FAST), tmp_path / "run",
                       log=lambda *a: None)
    h = rec["history"]
    assert [(r["kind"], r["target"]) for r in h] == [("learn", "task1"), ("forget", author), ("learn", "task2")]
    gone = h[1]["forgotten"][author]
    assert gone["accuracy"] < 0.5 * h[0]["learned"]["task1"]["accuracy"]  # the forget worked
    assert 0.0 <= gone["forget_quality"] <= 1.0 and "oracle_accuracy" in gone
    # the author stays forgotten after task 2 was learned with replay: the memory no longer holds their items
    assert h[2]["forgotten"][author]["accuracy"] < 0.5 * h[0]["learned"]["task1"]["accuracy"]
    assert other not in h[2]["forgotten"]
    assert h[2]["learned"]["task1"]["ratio"] >= 0.8  # the other author of task 1 stays learned through both


def test_refresh_unlearning_step_by_hand():
    from obliviate.continual.strategies.refresh import unlearn_step

    p = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    g = [torch.tensor([0.1, 0.3]), torch.tensor([[-1.0]])]
    unlearn_step(p, g, gamma=0.5, sigma=0.0)
    assert p[0].tolist() == pytest.approx([1.05, -1.85]) and p[1].item() == pytest.approx(0.0)
    q = [torch.zeros(3)]
    unlearn_step(q, [torch.ones(3)], gamma=0.1, sigma=0.2, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(3, generator=torch.Generator().manual_seed(3))
    assert q[0].tolist() == pytest.approx([0.1 + 0.2 * float(e) for e in eps], rel=1e-6)


def test_fpf_consolidates_only_the_modules_that_moved_most(random_model, small_bench):
    from obliviate.continual.strategies import make_strategy
    from obliviate.continual.tasks import split_tasks

    tasks = split_tasks(small_bench, 4)
    assert [n for n, _ in make_strategy("fpf").stages(tasks)] == ["task1", "task2", "task3", "task4",
                                                                "consolidate-task4"]
    assert [n for n, _ in make_strategy("fpf", every=2).stages(tasks)] == [
        "task1", "task2", "consolidate-task2", "task3", "task4", "consolidate-task4"]
    model, tok = random_model
    model = copy.deepcopy(model)
    fpf = make_strategy("fpf", n_modules=1, buffer_size=4)
    fpf.begin(model, tok, [])
    name = [n for n, _ in model.named_parameters() if n.endswith("o_proj.weight")][0]
    with torch.no_grad():
        dict(model.named_parameters())[name].mul_(3.0)  # this module moved by 2x its norm; nothing else moved
    fpf.after_stage(model, tok, tasks[0].items)
    assert fpf.selected() == {name[: -len(".weight")]}
    assert fpf.moved[name[: -len(".weight")]] == pytest.approx(2.0, rel=1e-5)
    assert len(fpf.data([])["train"]) == 4  # the buffer, drawn from the tasks learned so far
    method = fpf.method("consolidate-task1")
    method.setup(model, tok, {})
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [name]
    method.finish(model)
    assert all(p.requires_grad for p in model.parameters())


def test_superficial_and_essential_forgetting_by_hand():
    from obliviate.data import QAItem

    item = QAItem(question="Where was Ana Bel born?", answer="Ana Bel was born in Kalomoor.",
                  paraphrased_answer="The birthplace of Ana Bel is Kalomoor.",
                  perturbed_answers=["The birthplace of Ana Bel is Renport.", "The birthplace of Ana Bel is Vaford."])
    facts = E.fact_words(item)
    assert facts == {"kalomoor"}  # the words of the answer no wrong answer shares
    assert E.answer_kind("Ana Bel was born in Kalomoor.", item.answer, facts) == "correct"
    assert E.answer_kind("Kalomoor", item.answer, facts) == "superficial"  # the fact, not in the answer's form
    assert E.answer_kind("Ana Bel was born in Renport.", item.answer, facts) == "essential"
    before = ["correct", "correct", "correct", "essential", "superficial"]
    after = ["correct", "superficial", "essential", "essential", "essential"]
    assert E.forgetting_kinds(before, after) == {"learned": 3, "kept": 1, "superficial": 1, "essential": 1}


def test_view_batch_replays_only_every_recall_interval_by_hand(random_model, fixed_batch):
    from obliviate.continual.strategies.view_batch import IntervalReplayNLL

    model, _ = random_model

    def nll(batch):  # token-mean NLL over the answer tokens, by hand
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total, n = 0.0, 0
        for b in range(logits.shape[0]):
            for t in range(1, logits.shape[1]):
                y = int(batch["labels"][b, t])
                if y != -100:
                    total -= float(torch.log_softmax(logits[b, t - 1].double(), -1)[y])
                    n += 1
        return total / n

    train = {k: v[:2] for k, v in fixed_batch.items()}
    memory = {k: v[2:] for k, v in fixed_batch.items()}
    method = IntervalReplayNLL(alpha=0.5, has_memory=True, recall_interval=3)
    with torch.no_grad():
        losses = [float(method.objective(model, {"train": train, "retain": memory}, None)[0]) for _ in range(4)]
    assert losses[0] == pytest.approx(nll(train) + 3 * 0.5 * nll(memory), rel=1e-4)  # step 0: a recall
    assert losses[1] == pytest.approx(nll(train), rel=1e-4) and losses[2] == pytest.approx(nll(train), rel=1e-4)
    assert losses[3] == pytest.approx(losses[0], rel=1e-5)  # step 3: the next recall


def test_gere_loss_is_label_fitting_alone_at_the_starting_model(random_model, fixed_batch):
    """Against itself (the teacher is the model), KL, feature and TM terms vanish: the loss is NLL(B) + w * NLL(G)."""
    from obliviate.continual.strategies import make_strategy
    from obliviate.logprobs import forward_logits, nll_mean

    model, tok = random_model
    gere = make_strategy("gere", w_kl=1.0, w_feat=1.0, w_tm=1.0, w_label=0.5)
    gere.begin(model, tok, ["g"])
    train = {k: v[:2] for k, v in fixed_batch.items()}
    general = {k: v[2:] for k, v in fixed_batch.items()}
    with torch.no_grad():
        loss, logs = gere.method().objective(model, {"train": train, "retain": general}, None)
        want = nll_mean(forward_logits(model, train), train["labels"]) + 0.5 * nll_mean(
            forward_logits(model, general), general["labels"])
    assert logs["kl"] == pytest.approx(0.0, abs=1e-6) and logs["feat"] == 0.0 and logs["tm"] == 0.0
    assert float(loss) == pytest.approx(float(want), rel=1e-5)


def test_ewc_reanchors_after_a_forget(random_model, small_bench):
    from obliviate.continual.strategies import make_strategy

    model, tok = random_model
    model = copy.deepcopy(model)
    ewc = make_strategy("ewc", lam=10.0)
    ewc.after_stage(model, tok, small_bench.full[:2])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)  # the forget moved the weights
    method = ewc.method()
    assert method.anchors and all(not torch.equal(method.anchors[n], p) for n, p in model.named_parameters())
    ewc.drop(small_bench.full[:1], model)
    assert all(torch.equal(ewc.method().anchors[n], p) for n, p in model.named_parameters())


def test_tofu_splits_into_tasks_of_twenty_item_authors():
    from conftest import TOFU

    from obliviate.continual.tasks import split_tasks
    from obliviate.data import load_benchmark

    if not (TOFU / "full.json").exists():
        pytest.skip("TOFU is not in the shared data folder")
    tasks = split_tasks(load_benchmark(TOFU, "forget10"), 5, authors_per_task=2)
    assert [len(t.items) for t in tasks] == [40] * 5  # TOFU names no entity: 20 consecutive items are one author
    assert tasks[0].authors == ["author001", "author002"] and tasks[1].authors == ["author041", "author042"]
    assert tasks[1].items[0].question != tasks[0].items[0].question


def test_reglora_key_positions_penalty_and_merge_by_hand(random_model, fixed_batch):
    from obliviate.continual.strategies.reglora import RegLoRALoss, key_mask, key_penalty

    u = torch.tensor([[0.1, -3.0], [2.0, 0.5]])
    assert key_mask(u, 0.5).tolist() == [[0.0, 1.0], [1.0, 0.0]]  # the two largest |update|
    d, m = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert float(key_penalty([d], [m])) == pytest.approx(2.0 ** 2 + 3.0 ** 2)

    model, tok = random_model
    model = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = RegLoRALoss(rank=2, lam=1.0)
    method.setup(model, tok, {})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".A" in n or ".B" in n or "embed" in n for n in trainable)
    name = next(iter(method.adapters))
    with torch.no_grad():
        method.adapters[name].B.fill_(0.01)
    delta = method.adapters[name].delta().detach().clone()
    method.masks = {name: torch.ones_like(delta)}
    loss, logs = method.objective(model, {"train": fixed_batch}, None)
    assert logs["key_penalty"] == pytest.approx(float((delta ** 2).sum()), rel=1e-5)
    method.finish(model)  # merged in place: W0 + B A, every parameter trainable again
    merged = dict(model.named_parameters())[name]
    torch.testing.assert_close(merged.detach(), before[name] + delta)
    assert all(p.requires_grad for p in model.parameters())
