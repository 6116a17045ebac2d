"""``--ds.packing_samples`` on the CPU platform: OpenRLHF's packed forward gives the padded forward's numbers.

OpenRLHF packs a micro-batch into one row (``flash_attn.bert_padding``'s unpadding, plain torch), calls
the model with ``attention_mask=None`` and per-sample position ids, and transformers then builds a
block-diagonal causal mask for SDPA itself. Real parts: OpenRLHF's ``Actor`` and the tiny
SmolLM2-shaped model with SDPA attention, in float32; no stand-in.
"""

from __future__ import annotations

import torch
from openrlhf.models.actor import Actor


def right_padded_rows(lengths: list[int], prompt_len: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Token ids, attention mask and action mask of rows of these lengths, right-padded."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    sequences = torch.zeros(len(lengths), width, dtype=torch.long)
    attention = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        sequences[row, :length] = torch.randint(5, 2000, (length,), generator=gen)
        attention[row, :length] = 1
    action_mask = attention[:, 1:].clone()
    action_mask[:, : prompt_len - 1] = 0
    return sequences, attention, action_mask


def test_packed_and_padded_forwards_give_the_same_log_probs_and_entropy(tiny_model_dir):
    padded = Actor(tiny_model_dir, attn_implementation="sdpa", packing_samples=False)
    padded.model.float()
    packed = Actor(padded.model, packing_samples=True)  # the same weights
    packed.packing_samples = True  # stock sets it only when it loads the model itself
    sequences, attention, action_mask = right_padded_rows([11, 5, 8, 2 + 4], prompt_len=4, seed=0)
    with torch.no_grad():
        want, want_out = padded(sequences, action_mask, attention_mask=attention, return_output=True,
                                return_entropy=True)
        got, got_out = packed(sequences, action_mask, attention_mask=attention, return_output=True,
                              return_entropy=True)
    assert want.abs().max() > 1  # real log-probs of a random model, not zeros
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    mask = attention[:, 1:].bool()  # the entropy of padding positions is not defined the same way
    torch.testing.assert_close(got_out.entropy[mask], want_out.entropy[mask], rtol=1e-4, atol=1e-4)


def test_packing_without_a_block_diagonal_mask_would_differ(tiny_model_dir):
    """The check above can fail: the same packed row, attended as one sequence (rows see each other),
    changes the log-probs of every row after the first."""
    model = Actor(tiny_model_dir, attn_implementation="sdpa", packing_samples=False)
    model.model.float()
    sequences, attention, action_mask = right_padded_rows([7, 6], prompt_len=3, seed=1)
    with torch.no_grad():
        separate = model(sequences, action_mask, attention_mask=attention)
        joined = torch.cat([sequences[0, :7], sequences[1, :6]]).unsqueeze(0)
        as_one = model.model(joined, attention_mask=torch.ones_like(joined)).logits.float().log_softmax(-1)
    # The second row's action positions 2..4 (tokens 3..5) sit at 9..11 of the joined row.
    second_row = as_one[0, 9:12].gather(-1, joined[0, 10:13].unsqueeze(-1)).squeeze(-1)
    assert action_mask[1, 2:5].all() and not action_mask[1, 5]
    assert (second_row - separate[1, 2:5]).abs().max() > 1e-2
