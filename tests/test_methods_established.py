"""The established methods: each loss (or update) against a token-by-token hand computation on a fixed tiny model and
batch, each method's behaviour on the synthetic benchmark, and each from the command line.

Hand computations call the model directly and loop over tokens in double precision; they use none of the library's
log-prob helpers or losses.
"""

import copy
import json
import math

import pytest
import torch
from conftest import mean_prob, perturbed_copy

from obliviate.config import TrainConfig
from obliviate.data import PromptFormat, pad_batch
from obliviate.engine import train
from obliviate.errors import ConfigError
from obliviate.methods import make_method

ESTABLISHED = ["IdkDPO", "IdkNLL", "AltPO", "RMU", "UNDIAL", "WGA", "SatImp", "CEU", "PDU", "TaskVector", "WHP"]


# --- independent hand computations -----------------------------------------------------------------------------------

def logits_of(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()


def target_positions(labels):
    """(b, t, y): the logits at position t predict the answer token y = labels[b, t + 1]."""
    out = []
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y != -100:
                out.append((b, t, y))
    return out


def log_softmax(row):
    return row - torch.logsumexp(row, 0)


def hand_seq_logprobs(logits, labels):
    sums = [0.0] * labels.shape[0]
    for b, t, y in target_positions(labels):
        sums[b] += float(log_softmax(logits[b, t])[y])
    return sums


def hand_nll_mean(logits, labels):
    pos = target_positions(labels)
    return -sum(float(log_softmax(logits[b, t])[y]) for b, t, y in pos) / len(pos)


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


class CachedRef:
    """Cached reference sequence log-probs per stream, given as numbers."""

    def __init__(self, **streams):
        self.streams = {k: torch.tensor(v, dtype=torch.float32) for k, v in streams.items()}

    def sequence_logprob(self, split, batch):
        return self.streams[split][batch["index"]]


class LogitsRef:
    """A reference that returns given logits (or runs a given frozen model)."""

    def __init__(self, logits=None, model=None):
        self._logits, self.model = logits, model

    def logits(self, batch):
        if self._logits is not None:
            return self._logits
        with torch.no_grad():
            return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def encode_batch(tok, questions, answers):
    fmt = PromptFormat(tok)
    b = pad_batch([fmt.encode(q, a) for q, a in zip(questions, answers)], tok.pad_token_id)
    b["index"] = torch.arange(len(questions))
    return b


def approx(x):
    return pytest.approx(x, rel=1e-5, abs=1e-7)


# --- losses by hand --------------------------------------------------------------------------------------------------

def test_idk_answers_ship_with_the_package_and_tofu_file_reads(small_bench):
    from conftest import TOFU

    from obliviate.resources import IDK_FILE, idk_answers

    lines = [ln.strip() for ln in IDK_FILE.read_text().splitlines() if ln.strip()]
    assert len(lines) == 100 and len(set(lines)) == 100
    assert idk_answers() == lines
    if (TOFU / "idontknow.jsonl").exists():
        tofu = idk_answers(TOFU / "idontknow.jsonl")
        assert len(tofu) >= 99 and all(not a.startswith('"') for a in tofu)
    m = make_method("IdkNLL", seed=3)
    stream = m.setup(None, None, {"forget": small_bench.forget})["forget_idk"]
    assert [it.question for it in stream] == [it.question for it in small_bench.forget]
    assert all(it.answer in lines for it in stream) and len({it.answer for it in stream}) > 1
    again = make_method("IdkNLL", seed=3).setup(None, None, {"forget": small_bench.forget})["forget_idk"]
    assert [it.answer for it in again] == [it.answer for it in stream]


def test_idk_nll_by_hand(random_model, fixed_batch, small_bench):
    model, tok = random_model
    items = small_bench.forget[:4]
    idk = encode_batch(tok, [it.question for it in items], ["I don't know.", "No idea, sorry.", "I'm stumped.",
                                                          "I can't say for sure."])
    loss, _ = make_method("IdkNLL", gamma=1.5, alpha=0.5).loss(model, {"forget": fixed_batch, "forget_idk": idk,
                                                                       "retain": fixed_batch}, None)
    want = 1.5 * hand_nll_mean(logits_of(model, idk), idk["labels"]) + \
        0.5 * hand_nll_mean(logits_of(model, fixed_batch), fixed_batch["labels"])
    assert loss.item() == approx(want)


@pytest.mark.parametrize("name,stream", [("IdkDPO", "forget_idk"), ("AltPO", "forget_alt")])
def test_dpo_methods_by_hand(random_model, fixed_batch, small_bench, name, stream):
    model, tok = random_model
    items = small_bench.forget[:4]
    win = encode_batch(tok, [it.question for it in items], ["I don't know.", "Vastead is not it.", "Hmm.",
                                                          "Someone else entirely."])
    lose_lp = hand_seq_logprobs(logits_of(model, fixed_batch), fixed_batch["labels"])
    win_lp = hand_seq_logprobs(logits_of(model, win), win["labels"])
    ref_lose = [x + d for x, d in zip(lose_lp, [1.0, -0.5, 0.3, 2.0])]
    ref_win = [x + d for x, d in zip(win_lp, [-1.0, 0.2, 0.0, -3.0])]
    beta, gamma = 0.5, 2.0
    loss, _ = make_method(name, beta=beta, gamma=gamma, alpha=0.0).loss(
        model, {"forget": fixed_batch, stream: win}, CachedRef(forget=ref_lose, **{stream: ref_win}))
    want = 0.0
    for lw, rw, ll, rl in zip(win_lp, ref_win, lose_lp, ref_lose):
        want += -(2 / beta) * log_sigmoid(beta * ((lw - rw) - (ll - rl)))
    assert loss.item() == approx(gamma * want / 4)


def test_idkdpo_retain_pref_by_hand(random_model, fixed_batch, small_bench):
    """retain_pref: DPO on the retain stream preferring each question's own answer to a refusal, added to the forget
    DPO and the retain NLL; every sequence log-prob and the NLL computed token by token."""
    model, tok = random_model
    f_items, r_items = small_bench.forget[:4], small_bench.retain[:3]
    f_idk = encode_batch(tok, [it.question for it in f_items], ["I don't know.", "No idea.", "Hmm.", "Not sure."])
    retain = encode_batch(tok, [it.question for it in r_items], [it.answer for it in r_items])
    r_idk = encode_batch(tok, [it.question for it in r_items], ["I can't say.", "I don't know.", "No idea at all."])
    lose = hand_seq_logprobs(logits_of(model, fixed_batch), fixed_batch["labels"])
    win = hand_seq_logprobs(logits_of(model, f_idk), f_idk["labels"])
    own = hand_seq_logprobs(logits_of(model, retain), retain["labels"])
    refused = hand_seq_logprobs(logits_of(model, r_idk), r_idk["labels"])
    refs = {"forget": [x + 0.7 for x in lose], "forget_idk": [x - 0.2 for x in win],
            "retain": [x + d for x, d in zip(own, [0.5, -1.0, 0.0])],
            "retain_idk": [x + d for x, d in zip(refused, [-0.3, 2.0, 0.1])]}
    beta, gamma, alpha, w = 0.5, 1.5, 0.8, 2.0

    def dpo(wins, ref_w, loses, ref_l):
        return sum(-(2 / beta) * log_sigmoid(beta * ((a - ra) - (b - rb)))
                   for a, ra, b, rb in zip(wins, ref_w, loses, ref_l)) / len(wins)

    m = make_method("IdkDPO", beta=beta, gamma=gamma, alpha=alpha, retain_pref=w)
    assert m.reference_streams == ("forget", "forget_idk", "retain", "retain_idk")
    loss, logs = m.loss(model, {"forget": fixed_batch, "forget_idk": f_idk, "retain": retain, "retain_idk": r_idk},
                        CachedRef(**refs))
    pref = dpo(own, refs["retain"], refused, refs["retain_idk"])
    want = gamma * dpo(win, refs["forget_idk"], lose, refs["forget"]) + \
        alpha * hand_nll_mean(logits_of(model, retain), retain["labels"]) + w * pref
    assert loss.item() == approx(want) and logs["retain_pref_loss"] == approx(pref)
    assert make_method("IdkDPO").reference_streams == ("forget", "forget_idk")
    with pytest.raises(ConfigError, match="retain_pref"):
        make_method("IdkDPO", retain_pref=1.0, alpha=0.0)


def test_idkdpo_retain_pref_trains_with_a_stream_aligned_to_retain(random_model, small_bench, tmp_path):
    """The engine draws ``retain_*`` streams with the retain items (here fewer retain than forget items) and caches
    their reference log-probs."""
    model, tok = copy.deepcopy(random_model[0]), random_model[1]
    data = {"forget": small_bench.forget[:8], "retain": small_bench.retain[:5]}
    cfg = TrainConfig(lr=1e-3, max_steps=2, batch_size=2, grad_accum=1, scheduler="constant", warmup_ratio=0.0)
    m = make_method("IdkDPO", retain_pref=1.0)
    train(model, tok, m, data, cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["retain_pref_loss"]) for r in rows)
    # at step 1 the model is the reference: the preference's margin is 0, its loss (2/beta) log 2
    assert rows[0]["retain_pref_loss"] == pytest.approx(2 / m.beta * math.log(2), rel=1e-4)


def test_altpo_alternates_differ_from_the_answers_and_are_seeded(random_model, small_bench):
    model, tok = random_model
    items = small_bench.forget[:4]
    m = make_method("AltPO", max_new_tokens=8, seed=5)
    alt = m.setup(model, tok, {"forget": items})["forget_alt"]
    assert [it.question for it in alt] == [it.question for it in items]
    assert all(a.answer and a.answer.strip().lower() != it.answer.strip().lower() for a, it in zip(alt, items))
    again = make_method("AltPO", max_new_tokens=8, seed=5).setup(model, tok, {"forget": items})["forget_alt"]
    assert [it.answer for it in again] == [it.answer for it in alt]
    greedy = make_method("AltPO", max_new_tokens=8, decoding="greedy").setup(model, tok, {"forget": items})
    assert all(a.answer != it.answer for a, it in zip(greedy["forget_alt"], items))


def test_altpo_standin_alternates_ask_about_the_stand_in_and_name_the_target_back(load_target, small_bench):
    """decoding="standin": the question is asked about the stand-in (greedy, computed here with ``model.generate``),
    a reverse question gets the stand-in's name, an item without an entity gets the banned-first-token greedy
    alternate, an item with the same answer shares the first one's, and an alternate holding its item's answer is
    replaced. The trained target answers its authors' questions, so asking about the author itself (a broken swap)
    gives other alternates."""
    from obliviate.data.forget_items import renamer
    from obliviate.data.records import QAItem
    from obliviate.methods.altpo import STAND_IN

    model, tok = load_target()
    model.eval()
    first = small_bench.forget[0]
    name, last = first.entity, first.entity.split()[-1]
    assert name in first.question
    items = [first,
             QAItem(question="Who is described here? This person wrote poems.", answer=name, entity=name),
             QAItem(question=f"What did {last} write?", answer=f"{last} wrote poems.", entity=name),
             QAItem(question="What is the capital of France?", answer="Paris."),
             QAItem(question="You are a teacher. " + first.question, answer=first.answer, entity=name),
             None]
    fmt = PromptFormat(tok)

    def greedy(question):
        ids = torch.tensor([fmt.prompt_ids(question)])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    about_stand_in = greedy(first.question.replace(name, STAND_IN))
    # an answer the stand-in's answer contains (its last word): that alternate would keep it, so another is made
    items[-1] = QAItem(question=first.question, answer=about_stand_in.split()[-1], entity=name)
    m = make_method("AltPO", decoding="standin", max_new_tokens=12)
    alt = [it.answer for it in m.setup(model, tok, {"forget": items})["forget_alt"]]
    assert alt[0] == about_stand_in.replace(STAND_IN, name)
    assert greedy(first.question) != about_stand_in          # the swap matters: the target knows the author
    assert alt[1] == STAND_IN
    assert alt[2] == greedy(f"What did {STAND_IN.split()[-1]} write?").replace("Hartley", last)
    assert alt[3] and alt[3] != items[3].answer
    assert alt[4] == alt[0]                                   # the same answer in another framing: one alternate
    assert alt[5] and items[5].answer.lower() not in alt[5].lower()
    back = renamer(["Edmund Hartley", "Hartley"], "Ada Quill", "Quill")
    assert back("Edmund Hartley met Hartley's friend; Hartleyville.") == "Ada Quill met Quill's friend; Hartleyville."


def hand_act_loss(h, target, labels):
    per_seq = []
    for b in range(labels.shape[0]):
        total, n = 0.0, 0
        for s in range(labels.shape[1]):
            if labels[b, s] != -100:
                total += float(((h[b, s].double() - target[b, s].double() if target.dim() == 3 else
                                 h[b, s].double() - target.double()) ** 2).mean())
                n += 1
        per_seq.append(total / n)
    return sum(per_seq) / len(per_seq)


def test_rmu_by_hand(random_model, fixed_batch):
    model, _ = random_model
    model = copy.deepcopy(model)
    other = perturbed_copy(model, 0.05)
    layer, c, alpha, gamma, seed = 0, 6.5, 3.0, 1.5, 7
    m = make_method("RMU", layer=layer, steering_coeff=c, alpha=alpha, gamma=gamma, seed=seed)
    with torch.no_grad():
        loss, logs = m.loss(model, {"forget": fixed_batch, "retain": fixed_batch}, LogitsRef(model=other))
        kw = dict(input_ids=fixed_batch["input_ids"], attention_mask=fixed_batch["attention_mask"],
                  output_hidden_states=True)
        h = model(**kw).hidden_states[layer + 1]  # the output of block `layer` (not the last: no final norm)
        h_ref = other(**kw).hidden_states[layer + 1]
    u = torch.rand(h.shape[-1], generator=torch.Generator().manual_seed(seed))
    control = c * u / u.norm()
    assert control.norm().item() == approx(c)
    forget = hand_act_loss(h, control, fixed_batch["labels"])
    retain = hand_act_loss(h, h_ref, fixed_batch["labels"])
    assert logs["forget_loss"] == approx(forget)
    assert logs["retain_loss"] == approx(retain)
    assert loss.item() == approx(gamma * forget + alpha * retain)


def test_rmu_computes_no_gradient_outside_its_selected_parameters(random_model, fixed_batch):
    model = copy.deepcopy(random_model[0]).train()
    m = make_method("RMU", layer=1, alpha=1.0)
    m.setup(model, None, {})
    selected = {n for n, p in model.named_parameters() if p.requires_grad}
    assert selected == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    ref = LogitsRef(model=copy.deepcopy(random_model[0]))
    loss, _ = m.loss(model, {"forget": fixed_batch, "retain": fixed_batch}, ref)
    loss.backward()
    for name, p in model.named_parameters():
        if name in selected:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    # a custom regex; a layer the model lacks and a regex that matches nothing are errors
    only = copy.deepcopy(random_model[0])
    make_method("RMU", layer=1, trainable=r"layers\.1\.self_attn\.o_proj").setup(only, None, {})
    assert [n for n, p in only.named_parameters() if p.requires_grad] == ["model.layers.1.self_attn.o_proj.weight"]
    with pytest.raises(ConfigError, match="2 decoder layers"):
        make_method("RMU").setup(copy.deepcopy(random_model[0]), None, {})
    with pytest.raises(ConfigError, match="no trainable parameter"):
        make_method("RMU", layer=1, trainable="nothing_here").setup(copy.deepcopy(random_model[0]), None, {})


def test_undial_by_hand_ignores_prompt_and_padding(random_model, fixed_batch):
    model, _ = random_model
    logits = logits_of(model, fixed_batch)
    torch.manual_seed(0)
    ref_logits = (logits + torch.randn_like(logits)).float()
    beta = 3.0
    loss, _ = make_method("UNDIAL", beta=beta, gamma=2.0).loss(model, {"forget": fixed_batch}, LogitsRef(ref_logits))
    pos = target_positions(fixed_batch["labels"])
    total = 0.0
    for b, t, y in pos:
        z = ref_logits[b, t].double().clone()
        z[y] -= beta
        q = torch.softmax(z, 0)
        total += float(-(q * log_softmax(logits[b, t])).sum())
    assert loss.item() == approx(2.0 * total / len(pos))
    # teacher logits at prompt and padding positions do not matter (the anchor penalised vocab id V-100 there)
    scrambled = ref_logits.clone()
    keep = torch.zeros(scrambled.shape[:2], dtype=torch.bool)
    for b, t, _ in pos:
        keep[b, t] = True
    scrambled[~keep] = torch.randn_like(scrambled[~keep]) * 10
    again, _ = make_method("UNDIAL", beta=beta, gamma=2.0).loss(model, {"forget": fixed_batch}, LogitsRef(scrambled))
    assert again.item() == approx(loss.item())


@pytest.mark.parametrize("name,hp", [("WGA", {"beta": 0.7}), ("SatImp", {"beta1": 2.0, "beta2": 0.5})])
def test_weighted_ascent_by_hand(random_model, fixed_batch, name, hp):
    model, _ = random_model
    logits = logits_of(model, fixed_batch)
    loss, _ = make_method(name, gamma=1.0, alpha=0.0, **hp).loss(model, {"forget": fixed_batch}, None)
    pos = target_positions(fixed_batch["labels"])
    total = 0.0
    for b, t, y in pos:
        lp = float(log_softmax(logits[b, t])[y])
        p = math.exp(lp)
        w = p ** hp["beta"] if name == "WGA" else p ** hp["beta1"] * (1 - p) ** hp["beta2"]
        total += -(w * -lp)
    assert loss.item() == approx(total / len(pos))


@pytest.mark.parametrize("n_ignore", [0, 1, 2])
def test_ceu_by_hand(random_model, fixed_batch, n_ignore):
    model, _ = random_model
    logits = logits_of(model, fixed_batch)
    loss, _ = make_method("CEU", ignore_first_n=n_ignore).loss(model, {"forget": fixed_batch}, None)
    total, n, seen = 0.0, 0, {}
    for b, t, y in target_positions(fixed_batch["labels"]):
        seen[b] = seen.get(b, 0) + 1
        if seen[b] <= n_ignore:
            continue
        z = logits[b, t]
        masked = z.clone()
        masked[y] = float("-inf")
        q = torch.softmax(masked, 0)
        lp = log_softmax(z)
        total += float(-sum(q[v] * lp[v] for v in range(len(z)) if v != y))
        n += 1
    assert loss.item() == approx(total / n)


def test_pdu_by_hand_with_its_dual_variable(random_model, fixed_batch):
    model, _ = random_model
    logits = logits_of(model, fixed_batch)
    pos = target_positions(fixed_batch["labels"])
    forget = sum(float((logits[b, t].max() - logits[b, t].mean()) ** 2) for b, t, _ in pos) / len(pos)
    retain = hand_nll_mean(logits, fixed_batch["labels"])
    batch = {"forget": fixed_batch, "retain": fixed_batch}
    for eps in (retain - 1.0, retain + 1.0):  # slack +1 then -1
        m = make_method("PDU", gamma=0.5, alpha=10.0, dual_step_size=3.0, eps=eps, dual_warmup_steps=1)
        loss, logs = m.loss(model, batch, None)
        assert loss.item() == approx(0.5 * forget + 10.0 * (retain - eps))
        assert logs["forget_loss"] == approx(forget)
        assert m.state_dict()["dual_lambda"] == 10.0  # warm-up: the first evaluation leaves lambda alone
        loss, _ = m.loss(model, batch, None)
        assert loss.item() == approx(0.5 * forget + 10.0 * (retain - eps))
        lam = max(0.0, 10.0 + 3.0 * (retain - eps))
        assert m.state_dict()["dual_lambda"] == approx(lam)
        loss, _ = m.loss(model, batch, None)  # the next step uses the updated lambda
        assert loss.item() == approx(0.5 * forget + lam * (retain - eps))
        restored = make_method("PDU", gamma=0.5, alpha=10.0, dual_step_size=3.0, eps=eps, dual_warmup_steps=1)
        restored.load_state_dict(json.loads(json.dumps(m.state_dict())))
        assert restored.state_dict() == m.state_dict()
    # projected: lambda never goes below 0
    m = make_method("PDU", alpha=1.0, dual_step_size=100.0, eps=retain + 1.0)
    m.loss(model, batch, None)
    assert m.state_dict()["dual_lambda"] == 0.0


def test_pdu_relative_eps_is_measured_on_the_retain_set(random_model, small_bench):
    model, tok = random_model
    items = small_bench.retain[:6]
    b = encode_batch(tok, [it.question for it in items], [it.answer for it in items])
    logits = logits_of(model, b)
    m = make_method("PDU", eps=0.25, eps_mode="relative")
    m.setup(model, tok, {"forget": [], "retain": items})
    assert m.eps_abs == approx(1.25 * hand_nll_mean(logits, b["labels"]))  # every retain answer token pooled


def test_task_vector_update_by_hand(random_model, small_bench, tmp_path):
    from obliviate.methods.shared import finetune_copy

    model, tok = random_model
    model = copy.deepcopy(model)
    items = small_bench.forget[:6]
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=3, seed=4)
    ft = finetune_copy(model, tok, items, 3, 1e-2, 3, seed=4, max_length=cfg.max_length)
    theta_ft = {n: p.detach().clone() for n, p in ft.named_parameters()}
    assert all(torch.equal(p, theta[n]) for n, p in model.named_parameters()), "the copy is trained, not the model"
    assert sum(float((theta_ft[n] - theta[n]).abs().sum()) for n in theta) > 0
    alpha = 2.5
    make_method("TaskVector", alpha=alpha).apply(model, tok, {"forget": items}, cfg, tmp_path)
    for n, p in model.named_parameters():
        want = theta[n].double() - alpha * (theta_ft[n].double() - theta[n].double())
        assert torch.allclose(p.double(), want, rtol=1e-5, atol=1e-7), n
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3] and all("ft_loss" in x for x in lines)


@pytest.mark.parametrize("target", ["argmax", "soft"])
def test_whp_by_hand(random_model, fixed_batch, small_bench, target):
    model, tok = random_model
    reinforced = perturbed_copy(model, scale=0.1)
    alpha = 2.0
    m = make_method("WHP", alpha=alpha, target=target)
    if target == "argmax":
        m.build_targets(model, reinforced, tok, small_bench.forget[:4])
        ref = None
    else:
        m.reinforced = reinforced
        ref = LogitsRef(model=model)
    student = perturbed_copy(model, scale=0.02, seed=3)
    loss, _ = m.loss(student, {"forget": fixed_batch}, ref)
    zb, zr, zs = logits_of(model, fixed_batch), logits_of(reinforced, fixed_batch), logits_of(student, fixed_batch)
    pos = target_positions(fixed_batch["labels"])
    total, changed = 0.0, 0
    for b, t, y in pos:
        generic = zb[b, t] - alpha * torch.clamp(zr[b, t] - zb[b, t], min=0)
        if target == "argmax":
            g = int(generic.argmax())
            changed += g != y
            total += -float(log_softmax(zs[b, t])[g])
        else:
            total += float(-(torch.softmax(generic, 0) * log_softmax(zs[b, t])).sum())
    assert loss.item() == approx(total / len(pos))
    if target == "argmax":
        assert changed > 0  # an untrained model's answers are not its argmax: the targets really are relabelled


def test_kl_retain_loss_ignores_padding_and_prompt(random_model, fixed_batch):
    """Through a method (WGA with only its KL retain term): the value is the hand KL over answer tokens, and neither
    the reference's logits off the answer nor extra padding change it."""
    model, _ = random_model
    logits = logits_of(model, fixed_batch)
    torch.manual_seed(1)
    ref_logits = (logits + torch.randn_like(logits)).float()
    m = make_method("WGA", gamma=0.0, alpha=1.0, retain_loss="kl")
    pos = target_positions(fixed_batch["labels"])
    want = 0.0
    for b, t, _ in pos:
        p_ref = log_softmax(ref_logits[b, t].double())
        want += float((p_ref.exp() * (p_ref - log_softmax(logits[b, t]))).sum())
    want /= len(pos)
    got, _ = m.loss(model, {"forget": fixed_batch, "retain": fixed_batch}, LogitsRef(ref_logits))
    assert got.item() == approx(want)
    scrambled = ref_logits.clone()
    off = torch.ones(scrambled.shape[:2], dtype=torch.bool)
    for b, t, _ in pos:
        off[b, t] = False
    scrambled[off] = torch.randn_like(scrambled[off]) * 10
    got2, _ = m.loss(model, {"forget": fixed_batch, "retain": fixed_batch}, LogitsRef(scrambled))
    assert got2.item() == approx(want)
    # eight more padding columns: same value (right padding does not change the real tokens' logits)
    extra = 8
    padded = {k: torch.cat([v, torch.full((v.shape[0], extra), {"input_ids": 0, "attention_mask": 0,
                                                                    "labels": -100}[k], dtype=v.dtype)], 1)
              for k, v in fixed_batch.items() if k != "index"}
    ref_padded = torch.cat([ref_logits, torch.randn(ref_logits.shape[0], extra, ref_logits.shape[2]) * 10], 1)
    got3, _ = m.loss(model, {"forget": padded, "retain": padded}, LogitsRef(ref_padded))
    assert got3.item() == pytest.approx(want, rel=1e-4)


def test_pure_loss_functions_on_plain_numbers():
    from obliviate.methods.losses import (
        dpo_loss,
        pdu_forget_loss,
        rmu_act_loss,
        task_vector_negation,
        whp_generic_logits,
    )

    assert dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-1.0]),
                    0.1).item() == approx(-20 * log_sigmoid(0.1 * (2.0 - (-1.0))))
    logits = torch.tensor([[[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]]])
    assert pdu_forget_loss(logits, torch.tensor([[-100, 2]])).item() == approx((6 - 3) ** 2)
    h = torch.tensor([[[1.0, 1.0], [3.0, 5.0]]])
    assert rmu_act_loss(h, torch.tensor([1.0, 1.0]), torch.tensor([[False, True]])).item() == approx((4 + 16) / 2)
    assert whp_generic_logits(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0]), 2.0).tolist() == [-3.0, 2.0]
    assert task_vector_negation(torch.tensor(1.0), torch.tensor(1.5), 2.0).item() == 0.0


def test_a_composed_method_in_a_few_lines_matches_the_built_in(random_model, fixed_batch):
    """The composition shown in methods/losses.py's docstring: WGA forget term + KL retain term."""
    from dataclasses import dataclass

    from obliviate.logprobs import forward_logits
    from obliviate.methods import Method, retain_loss, wga_loss

    @dataclass
    class WgaKl(Method):
        beta: float = 1.0
        uses_retain, reference = True, "model"

        def loss(self, model, batch, ref):
            f = batch["forget"]
            forget = wga_loss(forward_logits(model, f), f["labels"], self.beta)
            retain = retain_loss("kl", model, batch["retain"], ref)
            return forget + retain, {"forget_loss": forget.item(), "retain_loss": retain.item()}

    model, _ = random_model
    logits = logits_of(model, fixed_batch).float()
    ref = LogitsRef(logits + 0.5 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)))
    batch = {"forget": fixed_batch, "retain": fixed_batch}
    mine, _ = WgaKl(beta=0.5).loss(model, batch, ref)
    built_in, _ = make_method("WGA", beta=0.5, retain_loss="kl").loss(model, batch, ref)
    assert mine.item() == approx(built_in.item()) and mine.item() != 0


def test_bad_hyperparameters_are_config_errors():
    for name, hp, msg in [("IdkDPO", {"beta": 0}, "out of range"), ("RMU", {"retain_loss": "mse"}, "must be one of"),
                          ("PDU", {"eps_mode": "auto"}, "must be one of"), ("WHP", {"target": "max"}, "must be one of"),
                          ("CEU", {"ignore_first_n": -1}, "out of range"), ("AltPO", {"decoding": "beam"}, "one of"),
                          ("TaskVector", {"alpha": -1}, "out of range"), ("SatImp", {"beta1": "x"}, "not a number"),
                          ("UNDIAL", {"betta": 1}, "unknown hyperparameter")]:
        with pytest.raises(ConfigError, match=msg):
            make_method(name, **hp)


# --- behaviour on the synthetic benchmark ----------------------------------------------------------------------------

# (method, hyperparameters, lr, steps); tiny-model settings, found by a small sweep (see the report in the PR)
BEHAVIOUR = [
    ("IdkNLL", {}, 1e-3, 30),
    ("IdkDPO", {}, 2e-3, 30),
    ("AltPO", {"max_new_tokens": 24}, 1e-3, 30),
    ("RMU", {"layer": 1, "alpha": 10.0}, 5e-3, 30),
    ("UNDIAL", {"alpha": 1.0}, 1e-3, 30),
    ("WGA", {}, 2e-3, 30),
    ("SatImp", {"gamma": 1.0}, 2e-3, 45),
    ("CEU", {"alpha": 1.0}, 1e-3, 30),
    ("PDU", {}, 1e-3, 30),
    ("TaskVector", {"alpha": 5.0}, 1e-3, 10),
    ("WHP", {"reinforce_lr": 5e-3, "reinforce_steps": 20, "retain_weight": 1.0}, 2e-3, 30),
]


@pytest.mark.parametrize("name,hp,lr,steps", BEHAVIOUR, ids=[b[0] for b in BEHAVIOUR])
def test_method_forgets_and_keeps(load_target, small_bench, tmp_path, name, hp, lr, steps):
    from obliviate.methods.losses import rmu_act_loss
    from obliviate.methods.rmu import control_vector
    from obliviate.methods.shared import layer_activations

    model, tok = load_target()
    method = make_method(name, **hp)
    forget0, retain0 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    fb = pad_batch([PromptFormat(tok).encode(it.question, it.answer) for it in small_bench.forget], tok.pad_token_id)

    def steer_distance(net):
        with torch.no_grad():
            h = layer_activations(net, fb, method.layer)
            return rmu_act_loss(h, control_vector(h.shape[-1], method.steering_coeff, method.seed),
                                fb["labels"] != -100).item()

    d0 = steer_distance(model) if name == "RMU" else None
    cfg = TrainConfig(lr=lr, max_steps=steps, batch_size=4, scheduler="constant")
    model = train(model, tok, method, {"forget": small_bench.forget, "retain": small_bench.retain}, cfg, tmp_path,
                  progress=False)
    forget1, retain1 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    print(f"\n{name} {hp} lr={lr} steps={steps}: forget {forget0:.3f} -> {forget1:.3f} ({forget1 / forget0:.3f}), "
          f"retain {retain0:.3f} -> {retain1:.3f} ({retain1 / retain0:.3f})")
    if name == "RMU":
        d1 = steer_distance(model)
        print(f"RMU steered-layer MSE to c*u: {d0:.3f} -> {d1:.3f}")
        assert d1 <= 0.6 * d0, (d0, d1)
    else:
        assert forget1 <= 0.5 * forget0, (forget0, forget1)
    if method.uses_retain:
        assert retain1 >= 0.8 * retain0, (retain0, retain1)
    if name == "PDU":
        lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        lams = [x["dual_lambda"] for x in lines]
        assert len(lams) == steps and len(set(lams)) > 1 and all(x >= 0 for x in lams)


# --- the command line ------------------------------------------------------------------------------------------------

def test_methods_command_lists_every_method(capsys):
    from obliviate.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ESTABLISHED:
        assert any(line.startswith(name + " ") for line in out.splitlines()), name


CLI_HP = {"RMU": ["layer=1"], "WHP": ["reinforce_steps=2"], "AltPO": ["max_new_tokens=8"]}


@pytest.mark.parametrize("name", ESTABLISHED)
def test_unlearn_command_runs_each_method(small_bench_dir, target_path, tmp_path, name):
    from obliviate.cli import main

    out = tmp_path / "run"
    hp = [x for kv in CLI_HP.get(name, []) for x in ("--hp", kv)]
    rc = main(["unlearn", "--data", str(small_bench_dir), "--model", str(target_path), "--method", name,
               "--max-steps", "2", "--batch-size", "4", "--out", str(out), "--quiet", *hp])
    assert rc == 0
    assert (out / "model" / "config.json").exists()
    assert json.loads((out / "config.json").read_text())["method"] == name
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
