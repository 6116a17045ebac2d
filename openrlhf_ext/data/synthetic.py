"""Embedded prompt source: generated arithmetic and word problems with exact integer answers.

No files needed, seeded and reproducible (the same ``seed`` gives the same problems, and the first k
problems of a longer run are the k problems of a shorter one). ``difficulty`` sets how hard the problems
are, so that a small model (e.g. SmolLM2-135M-Instruct) gets a mix of right and wrong answers, which is
what a group-based advantage needs to see any signal:

* 0: single-digit addition (``What is 3 + 5?``);
* 1: two-digit addition or subtraction with a non-negative result;
* 2: multiplication of a two-digit by a one-digit number;
* 3: multi-step word problems (two or three operations).
"""

from __future__ import annotations

import random
from collections.abc import Callable

DIFFICULTIES = (0, 1, 2, 3)

_NAMES = ("Ava", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack", "Lena", "Omar")
_ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "cards", "shells", "books")


def _single_digit_sum(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"What is {a} + {b}?", a + b


def _two_digit_add_sub(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if rng.random() < 0.5:
        return f"What is {a} + {b}?", a + b
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}?", a - b


def _multiply(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(11, 99), rng.randint(2, 9)
    return f"What is {a} * {b}?", a * b


def _buy_and_give(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    have, packs, per_pack = rng.randint(2, 30), rng.randint(2, 6), rng.randint(3, 12)
    give = rng.randint(1, have + packs * per_pack - 1)
    text = (
        f"{name} has {have} {item}. {name} buys {packs} packs with {per_pack} {item} in each pack, "
        f"then gives {give} {item} to a friend. How many {item} does {name} have now?"
    )
    return text, have + packs * per_pack - give


def _change(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    price, qty = rng.randint(2, 15), rng.randint(2, 9)
    bill = next(b for b in (20, 50, 100, 200) if b >= price * qty)
    text = (
        f"A shop sells {item} for {price} dollars each. {name} buys {qty} of them and pays with a "
        f"{bill}-dollar bill. How many dollars of change does {name} get?"
    )
    return text, bill - price * qty


def _reading(rng: random.Random) -> tuple[str, int]:
    name = rng.choice(_NAMES)
    per_day, days, extra = rng.randint(5, 40), rng.randint(2, 9), rng.randint(1, 30)
    text = (
        f"{name} reads {per_day} pages every day for {days} days, and then reads {extra} more pages. "
        f"How many pages does {name} read in total?"
    )
    return text, per_day * days + extra


def _boxes(rng: random.Random) -> tuple[str, int]:
    item = rng.choice(_ITEMS)
    boxes, per_box = rng.randint(3, 12), rng.randint(4, 25)
    lost = rng.randint(1, boxes * per_box - 1)
    shared = rng.randint(2, 5)
    total = boxes * per_box - lost
    total -= total % shared  # keep the division exact
    lost = boxes * per_box - total
    text = (
        f"There are {boxes} boxes with {per_box} {item} in each box. {lost} {item} are lost, and the rest "
        f"are shared equally among {shared} children. How many {item} does each child get?"
    )
    return text, total // shared


_GENERATORS: dict[int, tuple[Callable[[random.Random], tuple[str, int]], ...]] = {
    0: (_single_digit_sum,),
    1: (_two_digit_add_sub,),
    2: (_multiply,),
    3: (_buy_and_give, _change, _reading, _boxes),
}


def generate_problems(n: int, difficulty: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` problems of ``difficulty`` (see module docstring) as ``{"problem", "answer"}`` records."""
    if difficulty not in _GENERATORS:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"openrlhf_ext.synthetic:{difficulty}:{seed}")
    generators = _GENERATORS[difficulty]
    problems = []
    for _ in range(n):
        text, answer = rng.choice(generators)(rng)
        problems.append({"problem": text, "answer": str(answer)})
    return problems


def parse_synthetic_source(source: str, seed: int, default_n: int | None) -> list[dict[str, str]]:
    """Problems for a ``synthetic:DIFFICULTY[:N]`` source string (N defaults to ``default_n`` or 1000)."""
    parts = source.split(":")
    if len(parts) not in (2, 3) or parts[0] != "synthetic":
        raise ValueError(f"expected synthetic:DIFFICULTY[:N], got {source!r}")
    try:
        difficulty = int(parts[1])
        n = int(parts[2]) if len(parts) == 3 else (default_n or 1000)
    except ValueError:
        raise ValueError(f"expected synthetic:DIFFICULTY[:N] with integers, got {source!r}") from None
    return generate_problems(n, difficulty, seed)
