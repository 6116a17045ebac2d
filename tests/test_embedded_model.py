"""The embedded SmolLM2-135M-Instruct conversion and the tiny test model."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from openrlhf_ext.models import embedded
from openrlhf_ext.models.embedded import MARKER_FILE, build_tiny_model, ensure_embedded_model, find_gguf_file

IM_END_ID = 2  # SmolLM2's <|im_end|>, the GGUF's eos/pad id


def test_tiny_model_has_smollm2_shape_and_real_tokenizer(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 64, 2)
    assert config.head_dim == 32 and config.num_key_value_heads == 1
    assert config.vocab_size == 49152 and config.tie_word_embeddings

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == IM_END_ID
    assert tokenizer.pad_token_id == IM_END_ID and tokenizer.bos_token == "<|im_start|>"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer("What is 2 + 2?", return_tensors="pt")["input_ids"]
    logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()
    # 49152 x 64 embedding (tied) + 2 small layers: a few M parameters, not 135 M
    assert sum(p.numel() for p in model.parameters()) < 4_000_000


def test_tiny_model_is_reproducible_from_its_seed(tmp_path, tiny_model_dir):
    # the tiny model's config/tokenizer as source: layer sizes are overridden anyway
    a = build_tiny_model(tmp_path / "a", seed=3, source=tiny_model_dir)
    b = build_tiny_model(tmp_path / "b", seed=3, source=tiny_model_dir)
    c = build_tiny_model(tmp_path / "c", seed=4, source=tiny_model_dir)
    wa, wb, wc = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (a, b, c))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(wa[name], wb[name])
    assert not torch.equal(wa[name], wc[name])


@pytest.mark.parametrize(("hidden", "heads", "kv"), [(64, 4, 1), (65, 2, 1), (64, 2, 3)])
def test_tiny_model_rejects_bad_head_layout(tmp_path, tiny_model_dir, hidden, heads, kv):
    with pytest.raises(ValueError):
        build_tiny_model(tmp_path / "m", hidden_size=hidden, num_heads=heads, num_kv_heads=kv, source=tiny_model_dir)


def test_cache_dir_follows_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENRLHF_EXT_CACHE", str(tmp_path / "c"))
    assert embedded.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("OPENRLHF_EXT_CACHE")
    assert embedded.default_cache_dir().parts[-2:] == (".cache", "openrlhf_ext")


@pytest.mark.slow
def test_gguf_conversion_is_faithful_idempotent_and_redoes_a_killed_run(tmp_path):
    """The real 98 MB GGUF, converted into a fresh cache (~30 s on 2 cores)."""
    target = tmp_path / "models" / embedded.EMBEDDED_MODEL_NAME
    target.mkdir(parents=True)
    (target / "model.safetensors").write_text("half-written by a killed conversion")  # no marker

    path = ensure_embedded_model(cache_dir=tmp_path)
    assert path == str(target) and (target / MARKER_FILE).is_file()
    weights = target / "model.safetensors"
    assert weights.stat().st_size > 500_000_000  # 135 M float32 parameters, not the junk file
    assert not [p for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")]  # no temp dirs left

    # The saved checkpoint computes exactly what transformers' own GGUF loader computes.
    gguf = find_gguf_file()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(reference(input_ids=ids).logits, converted(input_ids=ids).logits)
    assert tokenizer.eos_token_id == IM_END_ID and converted.generation_config.eos_token_id == IM_END_ID

    mtime = weights.stat().st_mtime_ns
    start = time.monotonic()
    assert ensure_embedded_model(cache_dir=tmp_path) == path
    assert time.monotonic() - start < 1.0 and weights.stat().st_mtime_ns == mtime
