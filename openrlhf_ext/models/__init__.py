"""Models shipped with openrlhf-ext: the embedded SmolLM2-135M-Instruct and tiny test models."""

from openrlhf_ext.models.embedded import build_tiny_model, ensure_embedded_model

__all__ = ["build_tiny_model", "ensure_embedded_model"]
