"""The audit's faster scoring gives the numbers of the slower one, bit for bit, on a real tiny model.

``score_sequences`` scores only the answer tokens' logits, ``SCORE_ROWS`` rows at a time; every operation is row-wise,
so each token's log-prob, argmax hit and Min-K%++ z must equal those of the whole-tensor computation the audit used
before (written out here: log-softmax over [batch, length, vocabulary], then gather, argmax, the moments), exactly.
"""

import numpy as np
import torch
import torch.nn.functional as F

from obliviate.data import PromptFormat, pad_batch
from obliviate.scoring import passes


def _whole_tensor_scores(model, encs, pad_id):
    """One batch, the former computation: float32 temporaries of shape [batch, length, vocabulary]."""
    batch = pad_batch(encs, pad_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logp = F.log_softmax(logits.float(), -1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    hits = logits.argmax(-1) == labels
    p = logp.exp()
    mu = (p * logp).sum(-1)
    var = (p * (logp - mu.unsqueeze(-1)).square()).sum(-1)
    z = (picked - mu) / var.clamp(min=1e-6).sqrt()
    return [(picked[r][mask[r]].numpy(), hits[r][mask[r]].numpy(), z[r][mask[r]].numpy()) for r in range(len(encs))]


def enc_targets(enc):
    """The target tokens of an encoding: every label after the first that is not -100."""
    return [t for t in enc.labels[1:] if t != -100]


def test_chunked_answer_token_scores_equal_the_whole_tensor_ones(random_model, small_bench, monkeypatch):
    model, tok = random_model
    fmt = PromptFormat(tok)
    items = small_bench.forget[:6]
    encs = [fmt.encode(it.question, a) for it in items for a in [it.answer, *it.perturbed_answers[:1]]]
    # the batching score_sequences uses: sorted by length, batches of 4
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].input_ids))
    expected = {}
    for start in range(0, len(order), 4):
        chunk = order[start:start + 4]
        for i, s in zip(chunk, _whole_tensor_scores(model, [encs[i] for i in chunk], tok.pad_token_id)):
            expected[i] = s
    n_tokens = sum(len(s[0]) for s in expected.values())
    for rows in (passes.SCORE_ROWS, 7, 1):  # one chunk per batch; chunks cutting through sequences; one row a chunk
        monkeypatch.setattr(passes, "SCORE_ROWS", rows)
        got = passes.score_sequences(model, encs, tok.pad_token_id, batch_size=4)
        assert sum(len(s.logprobs) for s in got) == n_tokens
        for i, s in enumerate(got):
            lp, hits, z = expected[i]
            assert len(s.logprobs) == len(enc_targets(encs[i]))
            np.testing.assert_array_equal(s.logprobs, lp)
            np.testing.assert_array_equal(s.hits, hits)
            np.testing.assert_array_equal(s.zscores, z)


def test_token_scores_by_hand():
    """``token_scores`` on a fixed [3, 5] logit matrix against a float64 computation of each definition."""
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [-4.0, 8.0, 1.0, 1.0, -2.0]])
    labels = torch.tensor([4, 2, 0])
    picked, hits, z = passes.token_scores(logits, labels)
    for r in range(3):
        x = [float(v) for v in logits[r]]
        m = max(x)
        lse = m + np.log(sum(np.exp(v - m) for v in x))
        logp = [v - lse for v in x]
        p = [np.exp(v) for v in logp]
        mu = sum(pi * li for pi, li in zip(p, logp))
        var = sum(pi * (li - mu) ** 2 for pi, li in zip(p, logp))
        y = int(labels[r])
        assert abs(float(picked[r]) - logp[y]) < 1e-6
        assert bool(hits[r]) == (y == max(range(5), key=lambda j: x[j]))
        assert abs(float(z[r]) - (logp[y] - mu) / np.sqrt(max(var, 1e-6))) < 1e-4
    assert [len(t) for t in passes.token_scores(logits[:0], labels[:0])] == [0, 0, 0]  # a batch with no answer token


def test_rouge_tokenizer_with_cached_stems_equals_rouge_scores_own():
    """The memoised-stem tokenizer gives rouge-score's tokens, and ROUGE-L the same recall and F1, on texts whose
    words repeat (the cache's case) and need stemming (over three letters, suffixes)."""
    from rouge_score import rouge_scorer, tokenizers

    from obliviate.scoring import metrics as M

    texts = ["The author's novels, published in 1998, were praised; praising novelists publishes praise!",
             "Jaime Vasquez writes true-crime books. Writing, written, writes: he wrote them all in Santiago.",
             "", "   ", "caresses ponies ties caress cats running runs ran generously generous generalisation"]
    ours, theirs = M.RougeTokenizer(), tokenizers.DefaultTokenizer(use_stemmer=True)
    for t in texts + texts:
        assert ours.tokenize(t) == theirs.tokenize(t)
    ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for gen in texts:
        for truth in texts[:2]:
            s = ref.score(truth, gen)["rougeL"]
            assert M.rouge_l_recall(gen, truth) == s.recall
            assert M.rouge_l_f1(gen, truth) == s.fmeasure


def _generate_tokens(model, batch, n, eos, pad):
    out = model.generate(**batch, max_new_tokens=n, pad_token_id=pad, eos_token_id=eos, do_sample=False, num_beams=1,
                         temperature=None, top_p=None, top_k=None)
    return out[:, batch["input_ids"].shape[1]:]


def test_greedy_loop_gives_generates_tokens_rotary_and_absolute_positions(random_model, small_bench):
    """``greedy_tokens`` against ``model.generate`` on left-padded prompts of different lengths: a tiny Llama (rotary
    positions) and a tiny GPT-2 (absolute positions, where the position ids of padded rows matter), with EOS never
    met (every row runs to the limit) and with a frequent token as EOS (rows stop at different steps, finished rows
    padded, the loop ending early)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from obliviate.data.collate import pad_prompts_left

    llama, tok = random_model
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=2, n_head=2)).eval()
    fmt = PromptFormat(tok)
    questions = [it.question for it in small_bench.forget[:5]] + ["Who?"]
    batch = pad_prompts_left([fmt.prompt_ids(q) for q in questions], tok.pad_token_id)
    assert len(set(batch["attention_mask"].sum(-1).tolist())) > 1  # the rows are padded differently
    for model in (llama, gpt2):
        first = _generate_tokens(model, batch, 12, None, tok.pad_token_id)
        frequent = int(first[:, 3:].flatten().mode().values)  # a token the rows emit after a few steps
        for eos, n in ((None, 24), (frequent, 24)):
            want = _generate_tokens(model, batch, n, eos, tok.pad_token_id)
            got = passes.greedy_tokens(model, batch["input_ids"], batch["attention_mask"], n,
                                       [] if eos is None else eos, tok.pad_token_id)
            assert torch.equal(got, want), (type(model).__name__, eos)
        assert got.shape[1] < 24 or (got == frequent).any()  # the EOS case did stop rows
    assert passes.plain_greedy_ok(llama)
    llama.generation_config.repetition_penalty = 1.3  # a logits processor: generate() is used instead
    assert not passes.plain_greedy_ok(llama)
    llama.generation_config.repetition_penalty = 1.0


def test_preallocated_cache_hands_attention_what_dynamic_cache_does(random_model, small_bench, monkeypatch):
    """``preallocated_cache`` writes keys and values into buffers allocated once and returns views of the filled part:
    each layer's keys and values equal ``DynamicCache``'s after every update (the buffer grown past its capacity
    too), and greedy decoding gives the same tokens with a buffer that must grow several times as with one that never
    does."""
    from transformers import DynamicCache

    from obliviate.data.collate import pad_prompts_left

    model, tok = random_model
    cache = passes.preallocated_cache(model.config, 6)
    assert all(type(layer).__name__ == "_BufferLayer" for layer in cache.layers)
    plain = DynamicCache(config=model.config)
    torch.manual_seed(0)
    for length in (4, 1, 1, 3, 1):            # 4 + 1 + 1 fill the 6 positions; 3 more make it double
        k, v = torch.randn(2, 2, length, 8), torch.randn(2, 2, length, 8)
        got, want = cache.update(k, v, 0), plain.update(k, v, 0)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert cache.get_seq_length() == plain.get_seq_length()
    assert cache.layers[0].capacity == 18 and cache.layers[0].length == 10

    fmt = PromptFormat(tok)
    batch = pad_prompts_left([fmt.prompt_ids(it.question) for it in small_bench.forget[:4]], tok.pad_token_id)
    real, tokens = passes.preallocated_cache, {}
    for capacity in (1, None):                # 1: the buffer doubles again and again; None: room for every token
        monkeypatch.setattr(passes, "preallocated_cache", lambda config, n, c=capacity: real(config, c or n))
        tokens[capacity] = passes.greedy_tokens(model, batch["input_ids"], batch["attention_mask"], 20, [],
                                                tok.pad_token_id)
    assert torch.equal(tokens[1], tokens[None]) and tokens[1].shape[1] == 20
