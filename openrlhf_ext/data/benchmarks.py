"""Math benchmarks and training sets by name (docs/evaluation.md): where each lives on the Hugging Face
Hub and how its rows become ``{"problem", "answer"}`` records.

``--eval_data math500,aime24`` (``openrlhf_ext.cli.evaluate``, the sweep), ``--prompt_data gsm8k_train``
and ``--eval_dataset math500`` (training) name rows of :data:`BENCHMARKS`;
:func:`openrlhf_ext.data.load_problems` loads them with ``datasets.load_dataset`` (a local file or
folder of the same name wins over the registry).

The five evaluation benchmarks are the splits of ``lkevinzc/math-eval``, the evaluation suite of
Dr. GRPO ("Understanding R1-Zero-Like Training", arXiv:2503.20783) as its training code loads it
(``oat.experiment.run_math_rl``: ``--eval_data lkevinzc/math-eval``, one benchmark per split), among
them the MATH500, Minerva Math and OlympiadBench the Minimalist paper (arXiv:2504.11343) reports. Its
answers are lists of strings (several for some OlympiadBench problems).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class AnswerRule:
    """How a reference answer is read from its column (``description``: as docs/evaluation.md shows it)."""

    description: str
    read: Callable[[str], str]


def gsm8k_final_answer(solution: str) -> str:
    """The number after GSM8K's ``####`` marker, thousands separators dropped (``... #### 1,080`` -> ``1080``)."""
    _, marker, number = solution.rpartition("####")
    if not marker or not number.strip():
        raise ValueError(f"no '#### <number>' at the end of the GSM8K solution {solution[-60:]!r}")
    return number.strip().replace(",", "")


GSM8K_FINAL_ANSWER = AnswerRule("the number after `####`, thousands separators dropped", gsm8k_final_answer)


@dataclass(frozen=True)
class Benchmark:
    """A named problem set on the Hugging Face Hub.

    Attributes:
        dataset: the Hub id (anything ``datasets.load_dataset`` takes: tests point it at a local folder).
        config: the dataset's configuration (None: its default).
        split: the split holding the problems.
        problem_field, answer_field: the columns of the question and the reference answer.
        extraction: how the reference answer is read from its column (None: the column itself; a list of
            answers is joined by ", ", as for any source).
        rows: the number of problems, as the dataset card gives it.
        licence: the dataset card's licence, and the source's where the card states none.
        used_by: the paper / code whose evaluation or training uses this set.
    """

    dataset: str
    config: str | None
    split: str
    problem_field: str
    answer_field: str
    extraction: AnswerRule | None
    rows: int
    licence: str
    used_by: str


def _math_eval(split: str, rows: int, licence: str) -> Benchmark:
    return Benchmark("lkevinzc/math-eval", None, split, "problem", "answer", None, rows, licence,
                     "Dr. GRPO (oat `run_math_rl`)")


def _gsm8k(split: str, rows: int) -> Benchmark:
    return Benchmark("openai/gsm8k", "main", split, "question", "answer", GSM8K_FINAL_ANSWER, rows, "MIT",
                     "GSM8K (Cobbe et al. 2021)")


# A plain dict (not a read-only view): tests point a row at a dataset they saved locally.
BENCHMARKS: dict[str, Benchmark] = {
    "math500": _math_eval("math", 500, "none on the card; MATH (Hendrycks et al.): MIT"),
    "aime24": _math_eval("aime", 30, "none on the card; AIME 2024 problems (MAA)"),
    "amc23": _math_eval("amc", 83, "none on the card; AMC 12 2022-2023 problems (MAA)"),
    "minerva_math": _math_eval("minerva", 272, "none on the card; Minerva's MIT OCW problems"),
    "olympiadbench": _math_eval("olympiad_bench", 675, "none on the card; OlympiadBench: Apache-2.0"),
    "gsm8k": _gsm8k("test", 1319),
    "gsm8k_train": _gsm8k("train", 7473),
}


def table_markdown() -> str:
    """:data:`BENCHMARKS` as the markdown table of docs/evaluation.md."""
    lines = ["| name | dataset | config / split | problem | answer | answer read as | problems | licence | used by |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, b in BENCHMARKS.items():
        where = f"{b.config} / {b.split}" if b.config else b.split
        read = "the column (a list: joined by `, `)" if b.extraction is None else b.extraction.description
        lines.append(f"| `{name}` | [`{b.dataset}`](https://huggingface.co/datasets/{b.dataset}) | {where} | "
                     f"`{b.problem_field}` | `{b.answer_field}` | {read} | {b.rows} | {b.licence} | "
                     f"{b.used_by} |")
    return "\n".join(lines)
