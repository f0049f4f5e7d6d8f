"""The lm-head on target positions only (``logprobs.head_on_targets``): the same losses and gradients as the logits of
the whole padded batch, on a real tiny model."""

import copy

import pytest
import torch

from obliviate import logprobs


def _loss_and_grads(model, batch, on: bool, rows: int):
    for p in model.parameters():
        p.grad = None
    assert logprobs.head_on_targets(model, on, rows=rows) == on
    seq, count = logprobs.sequence_logprob_of(model, batch)
    nll = logprobs.nll_mean_of(model, batch)
    (0.3 * seq.sum() + nll).backward()
    logprobs.head_on_targets(model, False)
    return seq.detach(), count, nll.detach(), {k: p.grad.clone() for k, p in model.named_parameters()
                                                if p.grad is not None}


@pytest.mark.parametrize("rows", [3, 256])     # 3: many chunks, each padded to MIN_ROWS for the BLAS; 256: one chunk
def test_head_on_targets_gives_the_whole_batch_numbers(random_model, fixed_batch, rows):
    model = copy.deepcopy(random_model[0]).train()
    head = model.get_output_embeddings().weight
    for trainable_head in (False, True):
        head.requires_grad_(trainable_head)
        plain = _loss_and_grads(model, fixed_batch, False, rows)
        targets = _loss_and_grads(model, fixed_batch, True, rows)
        assert torch.equal(plain[0], targets[0]) and torch.equal(plain[1], targets[1])
        assert torch.equal(plain[2], targets[2])
        assert plain[3].keys() == targets[3].keys() and len(plain[3]) > 10
        for name, g in plain[3].items():
            if trainable_head and g.shape == head.shape:   # the head's own gradient: summed chunk by chunk
                torch.testing.assert_close(targets[3][name], g, rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(targets[3][name], g), name
    assert (plain[0] < 0).all() and plain[1].tolist() == (fixed_batch["labels"][:, 1:] != -100).sum(-1).tolist()


def test_head_on_targets_only_where_the_forward_is_decoder_then_head():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    assert logprobs.head_on_targets(gpt2, True) is False      # not in the list: the whole-batch logits serve
    assert getattr(gpt2, "_obliviate_head_rows") is None
