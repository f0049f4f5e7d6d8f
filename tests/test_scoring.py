"""The audit's single teacher-forced pass against one-token-at-a-time computations on a real tiny model."""

import math

import numpy as np
import torch

from obliviate.data import PromptFormat
from obliviate.scoring.passes import generate_answers, score_items


def test_scores_match_a_token_by_token_pass(random_model, small_bench):
    model, tok = random_model
    fmt = PromptFormat(tok)
    items = small_bench.forget[:3]
    scores = score_items(model, fmt, items, tok.pad_token_id, batch_size=2)
    for it, s in zip(items, scores):
        assert len(s.perturbed) == len(it.perturbed_answers) and s.paraphrased is not None
        enc = fmt.encode(it.question, it.answer)
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        lp, hits, zs = [], [], []
        for t in range(enc.prompt_len, len(enc.input_ids)):
            logp = torch.log_softmax(logits[t - 1], 0)
            y = enc.input_ids[t]
            lp.append(float(logp[y]))
            hits.append(int(logp.argmax()) == y)
            p = logp.exp()
            mu = float((p * logp).sum())
            sd = math.sqrt(max(float((p * logp ** 2).sum()) - mu ** 2, 1e-6))
            zs.append((float(logp[y]) - mu) / sd)
        np.testing.assert_allclose(s.answer.logprobs, lp, rtol=1e-5, atol=1e-6)
        assert list(s.answer.hits) == hits
        np.testing.assert_allclose(s.answer.zscores, zs, rtol=1e-4, atol=1e-5)


def test_batched_greedy_generation_equals_one_at_a_time(random_model, small_bench):
    model, tok = random_model
    fmt = PromptFormat(tok)
    questions = [it.question for it in small_bench.retain[:3]] + ["Who wrote a very long and winding book title?"]
    batched = generate_answers(model, tok, fmt, questions, batch_size=4, max_new_tokens=6)
    for q, got in zip(questions, batched):
        ids = torch.tensor([fmt.prompt_ids(q)])
        out = ids
        with torch.no_grad():
            for _ in range(6):
                nxt = model(input_ids=out).logits[0, -1].argmax()
                out = torch.cat([out, nxt.view(1, 1)], 1)
                if int(nxt) == tok.eos_token_id:
                    break
        assert got == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
