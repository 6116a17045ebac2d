"""The reward as OpenRLHF 0.11.2 uses it, through OpenRLHF's own client code:

* the reward file (``--reward.remote_url file.py``), loaded and called by ``SingleTurnAgentExecutor``;
* the HTTP server (``--reward.remote_url http://...``), called by the executor's HTTP client; a worker
  is killed mid-batch and the answer is still complete; SIGTERM ends the server cleanly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from openrlhf.utils.agent import SingleTurnAgentExecutor

from openrlhf_ext.rewards import REWARD_FUNC_PATH, RewardConfig
from openrlhf_ext.rewards.math_reward_func import reward_func

R1_PROMPT = "User: what is 2 + 3?\nAssistant: <think>"
TOWER = r"</think> <answer>\boxed{10^{10^{10^{10}}}}</answer>"


def test_reward_file_through_openrlhf_executor(monkeypatch):
    env = RewardConfig(signed=True, format_coef=0.25, timeout_s=2.0, template="r1", workers=1).to_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    executor = SingleTurnAgentExecutor(REWARD_FUNC_PATH)
    assert executor.reward_func is not None
    responses = {
        " add them.</think> <answer>5</answer>": 1.0,  # correct, formatted
        " add them.</think> <answer>6</answer>": -1.0,  # wrong, formatted
        r" add them.</think> so \boxed{5}": 0.75,  # correct, but r1 asks for <answer> tags
        " no idea": -1.25,  # no answer: wrong and badly formatted
        TOWER: -1.25,  # killed at the limit: wrong and badly formatted
    }
    queries = ["<s>" + R1_PROMPT + r for r in responses]  # the decode may add a BOS before the prompt
    start = time.monotonic()
    # Like OpenRLHF: one sample per call, each call on its own thread (asyncio.to_thread).
    outs = asyncio.run(executor._fetch_rewards_via_func(queries, [R1_PROMPT] * len(queries), ["5"] * len(queries)))
    assert time.monotonic() - start < 2.0 + 5.0
    assert [o["rewards"].item() for o in outs] == list(responses.values())
    assert [o["scores"].item() for o in outs] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert [o["extra_logs"]["reward_timed_out"].item() for o in outs] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert [o["extra_logs"]["reward_format_error"].item() for o in outs] == [0.0, 0.0, 1.0, 1.0, 1.0]
    # OpenRLHF turns each sample's reward into torch.tensor([reward]) (samples_generator): shape [1].
    assert torch.tensor([outs[0]["rewards"]]).shape == (1,)


def test_reward_func_batch_and_defaults(monkeypatch):
    for key in RewardConfig().to_env():
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OPENRLHF_EXT_REWARD_WORKERS", "1")
    out = reward_func(["Q1 \\boxed{3}", "Q2 #### 1,000", "Q3 it is 7"], ["Q1", "Q2", "Q3"], ["3", "1000", "8"])
    assert out["rewards"].tolist() == [1.0, 1.0, 0.0]
    assert out["extra_logs"]["reward_format_error"].tolist() == [0.0, 0.0, 1.0]  # fallback answer


@pytest.fixture()
def server():
    proc = subprocess.Popen(
        [sys.executable, "-m", "openrlhf_ext.rewards.server", "--host", "127.0.0.1", "--port", "0"]
        + ["--workers", "2", "--timeout", "2"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        yield proc, line.split()[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_protocol_crash_recovery_and_sigterm(server):
    proc, url = server
    base = url.rsplit("/", 1)[0]
    health = _get_json(base + "/health")
    assert health["status"] == "ok" and len(health["workers"]) == 3  # 2 workers + 1 spare

    executor = SingleTurnAgentExecutor(url)

    async def concurrent_batches():
        return await asyncio.gather(
            *[
                executor._fetch_rewards_via_http(
                    [f"Q{i}: \\boxed{{{i + k}}}" for k in range(10)], [f"Q{i}:"] * 10, [str(i + k) for k in range(10)]
                )
                for i in range(4)
            ]
        )

    for (answer,) in asyncio.run(concurrent_batches()):
        assert answer["rewards"] == [1.0] * 10
        assert set(answer["extra_logs"]) == {
            "reward_correct",
            "reward_format_error",
            "reward_timed_out",
            "reward_error",
            "reward_latency_s",
        }

    # Two hangs first (both workers busy), then 40 easy ones; both busy workers are killed meanwhile.
    queries = ["Q: " + TOWER, "Q: " + TOWER] + [f"Q: \\boxed{{{k}}}" for k in range(40)]
    labels = ["1", "1"] + [str(k) for k in range(40)]
    result = {}

    async def batch_with_kill():
        task = asyncio.create_task(executor._fetch_rewards_via_http(queries, ["Q:"] * 42, labels))
        # Kill the two busy workers once both hangs (the first two calls of the batch) are on them.
        busy = []
        while len(busy) < 2:
            await asyncio.sleep(0.05)
            busy = _get_json(base + "/health")["busy"]
        await asyncio.sleep(0.2)
        for pid in busy:
            os.kill(pid, signal.SIGKILL)
        result["answer"] = (await task)[0]

    asyncio.run(batch_with_kill())
    answer = result["answer"]
    assert answer["rewards"] == [0.0, 0.0] + [1.0] * 40
    counters = _get_json(base + "/health")["counters"]
    assert counters["crashes"] == 2  # the two busy workers; their requests were retried
    assert counters["timeouts"] == 2  # the retried hangs then hit the limit

    status, body = _post(url, b"{not json")
    assert status == 400 and "error" in body
    status, body = _post(url, json.dumps({"query": ["a", "b"], "labels": ["1"]}).encode())
    assert status == 400 and "labels" in body["error"]

    pids = _get_json(base + "/health")["workers"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    deadline = time.monotonic() + 5.0
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "workers outlived the server"
