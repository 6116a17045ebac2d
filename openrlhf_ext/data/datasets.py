"""Prompt datasets: load problems, apply a template, write a file OpenRLHF's ``PromptDataset`` reads.

Sources (:func:`load_problems`):

* ``*.jsonl``: one JSON object per line, read here so a malformed line is reported with file and line
  number (blank lines are skipped);
* ``*.json``: a JSON list of objects;
* a benchmark name (``math500``, ``gsm8k_train``, ...: :data:`openrlhf_ext.data.benchmarks.BENCHMARKS`)
  that is not a local path: its Hugging Face dataset, with the registry's columns and answer rule;
* anything else: a Hugging Face ``datasets`` source (``*.parquet`` / ``*.csv`` / ``*.arrow`` files, a
  directory written by ``save_to_disk``, or a dataset name available locally);
* ``synthetic:D`` / ``synthetic:D:N`` (generated arithmetic, :mod:`openrlhf_ext.data.synthetic`) and
  ``reasoning_gym:TASK[:N]`` (:mod:`openrlhf_ext.data.puzzles`): embedded sources that need no files.

Each problem record is ``{"problem": str, "answer": str}``; an answer given as a list (several final
answers) becomes its items joined by ", ". :func:`build_prompt_records` turns them into
``{"input": prompt, "label": answer, "problem": ..., "datasource": ...}``: ``input`` is OpenRLHF's
default ``--data.input_key``, so a written file is used with ``--data.label_key label`` and without
``--data.apply_chat_template`` / ``--data.input_template`` (the template is already applied).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from openrlhf_ext.data.benchmarks import BENCHMARKS, Benchmark
from openrlhf_ext.data.templates import apply_template

INPUT_KEY = "input"
LABEL_KEY = "label"
DEFAULT_SEED = 42


class DatasetFormatError(ValueError):
    """A prompt file cannot be read; the message names the file (and line)."""


def _record(obj: Any, where: str, problem_key: str, answer_key: str) -> dict[str, str]:
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in (problem_key, answer_key) if k not in obj]
    if missing:
        raise DatasetFormatError(f"{where}: missing key(s) {missing}; present: {sorted(obj)[:10]}")
    problem, answer = obj[problem_key], obj[answer_key]
    if not isinstance(problem, str) or not problem.strip():
        raise DatasetFormatError(f"{where}: {problem_key!r} must be a non-empty string")
    # A list holds several final answers (OlympiadBench) or one (Dr. GRPO's suite keeps every answer in a list).
    text = ", ".join(str(a).strip() for a in answer) if isinstance(answer, list) else str(answer).strip()
    if answer is None or not text:
        raise DatasetFormatError(f"{where}: {answer_key!r} is empty")
    return {"problem": problem, "answer": text}


Row = tuple[str, Any]  # (where: "file:line" or "file[index]", the parsed object)


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetFormatError(f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                rows.append((where, json.loads(line.rstrip("\r\n"))))  # columns of this line
            except (json.JSONDecodeError, RecursionError) as exc:
                reason = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "nested too deep"
                raise DatasetFormatError(f"{where}: invalid JSON ({reason})") from None
    return rows


def _read_json(path: Path) -> list[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DatasetFormatError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, list):
        raise DatasetFormatError(f"{path}: expected a JSON list of objects (use .jsonl for one object per line)")
    return [(f"{path}[{i}]", obj) for i, obj in enumerate(data)]


def _read_hf(source: str, split: str) -> list[Row]:
    import datasets  # heavy; only for this kind of source

    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        data = datasets.load_from_disk(source)
    elif path.suffix.lower() in (".parquet", ".csv", ".arrow"):
        data = datasets.load_dataset(path.suffix.lower().lstrip("."), data_files=source)
    else:
        data = datasets.load_dataset(source)
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DatasetFormatError(f"{source}: no split {split!r}; available: {list(data)}")
        data = data[split]
    return [(f"{source}[{i}]", row) for i, row in enumerate(data)]


def _read_benchmark(name: str, benchmark: Benchmark) -> list[dict[str, str]]:
    import datasets  # heavy; only for this kind of source

    where = f"{benchmark.dataset} ({benchmark.config + ', ' if benchmark.config else ''}split {benchmark.split})"
    try:
        data = datasets.load_dataset(benchmark.dataset, benchmark.config, split=benchmark.split)
    except OSError as exc:  # no network, offline mode, unknown or gated id: ConnectionError, HTTP errors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetFormatError(f"{name}: {where} could not be fetched from the Hugging Face Hub (offline?): "
                                 f"{reason}") from None
    except ValueError as exc:  # fetched, but the dataset no longer has the registry's config or split
        raise DatasetFormatError(f"{name}: {where}: {exc}") from None
    records = []
    for i, row in enumerate(data):
        record = _record(row, f"{name}: {benchmark.dataset}[{i}]", benchmark.problem_field, benchmark.answer_field)
        if benchmark.extraction is not None:
            try:
                record["answer"] = benchmark.extraction.read(record["answer"])
            except ValueError as exc:
                raise DatasetFormatError(f"{name}: {benchmark.dataset}[{i}]: {exc}") from None
        records.append(record)
    return records


def read_rows(source: str, split: str = "train") -> list[Row]:
    """Every record of a prompt file (``.jsonl``, ``.json``) or ``datasets`` source, unvalidated, with
    where it comes from; a missing local file or unreadable line raises :class:`DatasetFormatError`."""
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".parquet", ".csv", ".arrow") and not path.is_file():
        raise DatasetFormatError(f"{source}: no such file")
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    return _read_hf(source, split)


def is_benchmark(source: str) -> bool:
    """``source`` names a row of :data:`~openrlhf_ext.data.benchmarks.BENCHMARKS` (and is not a local path)."""
    return source in BENCHMARKS and not Path(source).exists()


def benchmark_names(value: str) -> list[str]:
    """The benchmark names among the comma-separated sources of ``value`` (OpenRLHF's list spelling)."""
    return [part.strip() for part in value.split(",") if is_benchmark(part.strip())]


def load_problems(
    source: str,
    problem_key: str = "problem",
    answer_key: str = "answer",
    split: str = "train",
    limit: int | None = None,
    seed: int = DEFAULT_SEED,
) -> list[dict[str, str]]:
    """Problems of ``source`` (see module docstring) as ``{"problem", "answer"}`` records.

    ``problem_key`` / ``answer_key`` name the columns of a file or dataset (a benchmark name brings its
    own); ``seed`` only matters for the embedded generated sources.
    """
    if source.startswith("synthetic:"):
        from openrlhf_ext.data.synthetic import parse_synthetic_source

        records = parse_synthetic_source(source, seed=seed, default_n=limit)
    elif source.startswith("reasoning_gym:"):
        from openrlhf_ext.data.puzzles import parse_puzzle_source

        records = parse_puzzle_source(source, seed=seed, default_n=limit)
    elif is_benchmark(source):
        records = _read_benchmark(source, BENCHMARKS[source])
    else:
        records = [_record(obj, where, problem_key, answer_key) for where, obj in read_rows(source, split)]
    if not records:
        raise DatasetFormatError(f"{source}: no problems")
    return records[:limit] if limit is not None else records


def build_prompt_records(
    problems: Iterable[dict[str, str]], template: str, tokenizer: Any | None = None, datasource: str = "default"
) -> list[dict[str, str]]:
    """Apply ``template`` (docs/rewards.md) to each problem; records for OpenRLHF's ``PromptDataset``."""
    return [
        {
            INPUT_KEY: apply_template(p["problem"], template, tokenizer),
            LABEL_KEY: p["answer"],
            "problem": p["problem"],
            "datasource": datasource,
        }
        for p in problems
    ]


def write_jsonl(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write ``records`` one JSON object per line (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def build_prompt_file(
    source: str,
    out_path: str | Path,
    template: str,
    tokenizer: Any | None = None,
    problem_key: str = "problem",
    answer_key: str = "answer",
    limit: int | None = None,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Load each source of the comma-separated ``source`` (its first ``limit`` problems, as OpenRLHF's
    ``--data.max_samples`` limits each dataset), apply ``template`` and write one prompt file for
    ``--data.prompt_dataset`` / ``--eval.dataset``. A record's ``datasource`` is its source's name
    (``math500``, ``gsm8k``, a file's stem): OpenRLHF's evaluation reports per datasource."""
    parts = [part.strip() for part in source.split(",") if part.strip()]
    if not parts:
        raise DatasetFormatError(f"{source!r}: no source given")
    records = []
    for part in parts:
        problems = load_problems(part, problem_key, answer_key, limit=limit, seed=seed)
        datasource = part.split(":")[0] if ":" in part else Path(part).stem
        records += build_prompt_records(problems, template, tokenizer, datasource)
    return write_jsonl(records, out_path)
