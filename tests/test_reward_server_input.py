"""The reward server answers malformed requests with 400 and a message, never 500 or a made-up score."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from openrlhf_ext.rewards import RewardConfig
from openrlhf_ext.rewards.pool import ScoringPool
from openrlhf_ext.rewards.server import make_app


@pytest.fixture(scope="module")
def pool():
    scoring_pool = ScoringPool(workers=1, spare=0)
    yield scoring_pool
    scoring_pool.close()


def post(pool, body: bytes) -> tuple[int, dict]:
    async def call():
        async with TestClient(TestServer(make_app(pool, RewardConfig()))) as client:
            response = await client.post("/get_reward", data=body, headers={"Content-Type": "application/json"})
            return response.status, await response.json()

    return asyncio.run(call())


def request(labels: list) -> bytes:
    return json.dumps({"query": [r"Q: \boxed{None}"] * len(labels), "prompts": ["Q:"] * len(labels),
                       "labels": labels}).encode()


def test_deeply_nested_json_is_a_bad_request(pool):
    status, body = post(pool, b'{"query": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert status == 400 and body["error"] == "request body: JSON nested too deep"


@pytest.mark.parametrize(("labels", "named"), [([None], "labels[0] is null"),
                                                (["1", {"answer": "None"}], 'labels[1] is {"answer": "None"}'),
                                                ([["None"]], 'labels[0] is ["None"]'),
                                                ([True], "labels[0] is true")])
def test_labels_that_are_not_strings_or_numbers_are_refused(pool, labels, named):
    status, body = post(pool, request(labels))
    assert status == 400 and body["error"] == f"'labels' must be strings or numbers; {named}"


def test_string_and_number_labels_are_scored(pool):
    body = json.dumps({"query": [r"Q: \boxed{42}", r"Q: \boxed{None}"], "prompts": ["Q:", "Q:"],
                       "labels": [42, "7"]}).encode()
    status, answer = post(pool, body)
    assert status == 200 and answer["rewards"] == [1.0, 0.0]
