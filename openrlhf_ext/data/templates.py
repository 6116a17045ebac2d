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

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
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


@dataclass(frozen=True)
class Template:
    """A prompt template and the answer form its responses are checked for (docs/rewards.md).

    Attributes:
        name: its value of ``--ext.template`` (and of ``--template`` in the evaluation and data commands).
        text: a ``str.format`` text with ``{question}``; None: rendered by the tokenizer's chat template.
        system: chat templates only, a system turn before the question (None: no system turn).
        question_suffix: chat templates only, appended to the question after a space.
        answer_forms: the answer forms (extraction rules of :mod:`openrlhf_ext.rewards.extract`) that
            count as well formatted; None: any explicit form (the last-number fallback never is one).
    """

    name: str
    text: str | None
    system: str | None = None
    question_suffix: str = ""
    answer_forms: tuple[str, ...] | None = None

    @property
    def tagged(self) -> bool:
        """The prompt opens ``<think>``; the response must close it and answer in ``<answer>`` tags
        (the r1 format check, and Dr. GRPO's strict reward)."""
        return self.answer_forms == ("answer_tag",)


_TEMPLATE_LIST = (
    Template("r1", R1_TEMPLATE, answer_forms=("answer_tag",)),
    Template("qwen_math", QWEN_MATH_TEMPLATE, answer_forms=("boxed",)),
    Template("none", "{question}"),
    Template("chat", None),
    Template("minimalist", None, system=MINIMALIST_SYSTEM, question_suffix=MINIMALIST_SUFFIX,
             answer_forms=("boxed",)),
)
TEMPLATES: Mapping[str, Template] = MappingProxyType({t.name: t for t in _TEMPLATE_LIST})
"""Every prompt template: the one list the CLI's choices, the data builder and the reward read."""
TEMPLATE_NAMES = tuple(TEMPLATES)


def get_template(name: str) -> Template:
    """The :class:`Template` called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; expected one of {TEMPLATE_NAMES}") from None


def apply_template(problem: str, name: str, tokenizer: Any | None = None) -> str:
    """The prompt for ``problem`` under template ``name`` (chat templates need a HF ``tokenizer``)."""
    template = get_template(name)
    if template.text is not None:
        return template.text.format(question=problem)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"template {name!r} needs a tokenizer that has a chat_template")
    question = f"{problem} {template.question_suffix}" if template.question_suffix else problem
    messages = [{"role": "user", "content": question}]
    if template.system is not None:
        messages.insert(0, {"role": "system", "content": template.system})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
