"""Prompt templates (docs/rewards.md; Dr. GRPO, "Understanding R1-Zero-Like Training", arXiv:2503.20783 §2.1).

* ``r1``: the DeepSeek-R1-Zero template (arXiv:2503.20783, Template 1); the prompt ends inside an opened
  ``<think>`` so the response continues the reasoning and closes with ``<answer>...</answer>``;
* ``qwen_math``: the Qwen2.5-Math ChatML template with the boxed-answer system prompt (Template 2);
* ``none``: the raw question (Template 3);
* ``chat``: the tokenizer's own chat template, one user turn, generation prompt appended;
* ``minimalist``: the prompt of "A Minimalist Approach to LLM Reasoning" (arXiv:2504.11343, Sec. 3;
  RLHFlow/Minimal-RL ``scripts/data_preprocess/numina_math.py``): the tokenizer's chat template with
  the boxed-answer system prompt and the question followed by "Let's think step by step and output
  the final answer within \\boxed{}.".

The texts follow the English originals used in the Dr. GRPO code (``understand-r1-zero``). They are
applied when the prompt file is built (:mod:`openrlhf_ext.data.datasets`), not through OpenRLHF's
``--data.input_template``: that option calls ``str.format`` and the ``\\boxed{}`` of ``qwen_math``
would be taken for a placeholder.
"""

from __future__ import annotations

from typing import Any

R1_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with "
    "the answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>.\nUser: {question}\nAssistant: <think>"
)
QWEN_MATH_TEMPLATE = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
    "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
)
MINIMALIST_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
MINIMALIST_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."
TEMPLATE_NAMES = ("r1", "qwen_math", "none", "chat", "minimalist")
CHAT_TEMPLATES = ("chat", "minimalist")
"""The templates that render through the tokenizer's chat template."""

_TEXT_TEMPLATES = {"r1": R1_TEMPLATE, "qwen_math": QWEN_MATH_TEMPLATE, "none": "{question}"}


def apply_template(problem: str, name: str, tokenizer: Any | None = None) -> str:
    """The prompt for ``problem`` under template ``name`` (``chat`` needs a HF ``tokenizer``)."""
    if name in CHAT_TEMPLATES:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"template {name!r} needs a tokenizer that has a chat_template")
        messages = [{"role": "user", "content": problem}]
        if name == "minimalist":
            messages = [{"role": "system", "content": MINIMALIST_SYSTEM},
                        {"role": "user", "content": f"{problem} {MINIMALIST_SUFFIX}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if name not in _TEXT_TEMPLATES:
        raise ValueError(f"unknown template {name!r}; expected one of {TEMPLATE_NAMES}")
    return _TEXT_TEMPLATES[name].format(question=problem)
