"""Bad input never hangs or crashes scoring (docs/rewards.md): every call returns within the limit + 1 s, is
scored wrong when it is wrong, the timeouts are counted, and the pool stays healthy."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.reward_corpus import HANGING_OUTPUTS as HANGS
from support.reward_corpus import QUICK_BAD_OUTPUTS as QUICK

from openrlhf_ext.rewards import RewardConfig, ScoringPool, score_responses

LIMIT_S = 2.0
SLACK_S = 1.0
LABEL = "5"


@pytest.fixture(scope="module")
def pool():
    with ScoringPool(workers=1, spare=1) as p:
        p.judge(r"\boxed{1}", "1", None, True, 30.0)  # wait for the first worker outside the timed calls
        yield p


def _timed(pool, response, label=LABEL):
    start = time.monotonic()
    batch = score_responses([response], [label], RewardConfig(timeout_s=LIMIT_S, workers=1), pool=pool)
    return batch.results[0], time.monotonic() - start


def test_adversarial_corpus(pool):
    before = pool.counters.snapshot()
    results = {}
    for name, response in {**HANGS, **QUICK}.items():
        result, elapsed = _timed(pool, response)
        assert elapsed < LIMIT_S + SLACK_S, f"{name} took {elapsed:.2f}s"
        assert result.reward == 0.0 and not result.correct, name
        results[name] = result
    for name in HANGS:
        assert results[name].timed_out, name
        assert results[name].error == "timeout"
    for name in QUICK:
        assert not results[name].timed_out, name
    assert results["nested_braces_10k"].error == "answer_too_long"
    assert results["answer_tag_megabyte"].error == "answer_too_long"
    after = pool.counters.snapshot()
    assert after["timeouts"] - before["timeouts"] == len(HANGS)
    assert after["restarts"] - before["restarts"] == len(HANGS)
    assert after["calls"] - before["calls"] == len(HANGS) + len(QUICK)
    # Healthy afterwards: right answers still score 1, and all processes are there.
    result, _ = _timed(pool, r"so \boxed{5}")
    assert result.reward == 1.0
    assert len(pool.worker_pids()) == 2


def test_answer_after_a_megabyte_of_text_is_found(pool):
    result, elapsed = _timed(pool, "x" * 1_000_000 + r" so \boxed{5}")
    assert result.correct and elapsed < LIMIT_S + SLACK_S


def test_scoring_from_a_non_main_thread_still_kills_hangs(pool):
    out = {}
    thread = threading.Thread(target=lambda: out.update(r=_timed(pool, HANGS["power_tower"])))
    thread.start()
    thread.join(LIMIT_S + 10)
    result, elapsed = out["r"]
    assert result.timed_out and elapsed < LIMIT_S + SLACK_S


def test_dead_idle_workers_are_replaced(pool):
    for pid in pool.worker_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    result, _ = _timed(pool, r"\boxed{5}")
    assert result.correct
    assert len(pool.worker_pids()) == 2


_LATEX_BITS = st.sampled_from(
    ["\\boxed{", "}", "{", "\\frac{", "^{", "\\left(", "\\right)", "<answer>", "</answer>", "####", "\\sqrt{",
     "9", "10", "!", "\\", "$", " ", "\n", "x", "=", "\\infty", "\\sum_{k=1}^{", "e^{", "-", ".", ","]
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.lists(_LATEX_BITS, max_size=60).map("".join)))
def test_generated_strings_return_in_time(pool, text):
    before = pool.counters.snapshot()["timeouts"]
    result, elapsed = _timed(pool, text)
    assert elapsed < LIMIT_S + SLACK_S
    assert result.reward in (0.0, 1.0)
    assert pool.counters.snapshot()["timeouts"] - before == int(result.timed_out)


def test_batch_statistics_count_what_happened(pool):
    responses = [
        r"so \boxed{5}",  # correct
        r"so \boxed{6}",  # wrong
        "no idea",  # no answer at all: wrong, format error
        QUICK["nested_braces_10k"],  # rejected by the length guard: wrong, an error
        HANGS["power_tower"],  # killed at the limit: wrong, format error, a timeout
    ]
    batch = score_responses(responses, [LABEL] * 5, RewardConfig(timeout_s=LIMIT_S, workers=1), pool=pool)
    stats = batch.stats()
    assert batch.rewards == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert stats.n == 5
    assert stats.reward_mean == pytest.approx(0.2)
    assert stats.accuracy == pytest.approx(0.2)
    assert stats.format_error_rate == pytest.approx(0.4)
    assert stats.timeout_count == 1
    assert stats.error_count == 1
    # p99 of 5 values lies 96 % of the way from the 4th to the 5th, the killed call (>= the limit)
    assert 0.96 * LIMIT_S <= stats.latency_p99_s < LIMIT_S + SLACK_S
    assert stats.latency_p50_s < 0.5
