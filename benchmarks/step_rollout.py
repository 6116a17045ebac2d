"""OpenRLHF agent file of ``benchmarks/bench_step.py`` (``--train.agent_func_path``): reproducible rollouts.

OpenRLHF loads ``AgentExecutor`` from this file inside each vLLM engine actor, for the stock run and
for ours alike. It is OpenRLHF's own single-turn executor with two additions:

* **seeded samples**: the k-th request for a prompt is sampled with a seed derived from the prompt
  and ``k mod n``. vLLM's sampling RNG is engine-wide, so without it the draw of a sample depends on
  which other requests share its batch; with it, two runs (stock and ours) draw the same responses,
  and every step of a run whose weights barely move draws the same rollout again;
* **scheduled kept fraction** (reward ``"schedule"``): the label of a prompt is its group number g
  (0..P-1); at step s the groups g < round(kept[s] * P) get rewards +1 / -1 alternately (a mixed
  group, kept by a filter) and the others +1 for every sample (an all-correct group, which
  Reinforce-Rej's filter drops). Otherwise the reward is the file named by ``reward``, scored by
  OpenRLHF as a ``--reward.remote_url`` file.

Every sample is also appended to the JSONL file ``trace`` (prompt, request number, seed, response
token ids, reward), from which the benchmark checks that two runs drew the same rollouts.

Settings: JSON in ``$OPENRLHF_EXT_BENCH_ROLLOUT`` (``n``, ``prompts``, ``reward``, ``kept``,
``trace``), set by the benchmark in the environment the Ray workers inherit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections import Counter

from openrlhf.utils.agent import SingleTurnAgentExecutor

SETTINGS_ENV = "OPENRLHF_EXT_BENCH_ROLLOUT"
SCHEDULE = "schedule"


def sample_seed(prompt: str, index: int) -> int:
    """Seed of sample ``index`` of ``prompt``: the same in every process and run."""
    digest = hashlib.blake2b(f"{index}:{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # vLLM takes a signed 64-bit seed


def scheduled_reward(group: int, sample: int, kept_groups: int) -> float:
    """+1 / -1 alternately for the first ``kept_groups`` groups (mixed), +1 for the others (all correct)."""
    if group < kept_groups:
        return 1.0 if sample % 2 == 0 else -1.0
    return 1.0


class AgentExecutor(SingleTurnAgentExecutor):
    """OpenRLHF's single-turn executor with seeded sampling and, optionally, the scheduled reward."""

    def __init__(self) -> None:
        settings = json.loads(os.environ[SETTINGS_ENV])
        self.n = settings["n"]
        self.prompts = settings["prompts"]
        self.kept = settings.get("kept") or [1.0]
        self.schedule = settings["reward"] == SCHEDULE
        super().__init__(None if self.schedule else settings["reward"])
        # The executor's coroutines run on the engine actor's one event loop: no lock needed.
        self.requests: Counter[str] = Counter()
        self.trace = open(settings["trace"], "a", encoding="utf-8")  # written for the actor's whole life

    async def execute(self, prompt, label, sampling_params, *args, **kwargs):
        k = self.requests[prompt]
        self.requests[prompt] += 1
        params = copy.deepcopy(sampling_params)
        params.seed = sample_seed(prompt, k % self.n)
        output = await super().execute(prompt, label, params, *args, **kwargs)
        if self.schedule:
            step = k // self.n
            kept_fraction = self.kept[min(step, len(self.kept) - 1)]
            reward = scheduled_reward(int(label), k % self.n, round(kept_fraction * self.prompts))
            output.update(reward=reward, scores=reward)
        start, end = output["action_ranges"][0]
        record = {"prompt": prompt, "request": k, "seed": params.seed,
                  "response": output["observation_tokens"][start:end], "reward": _number(output["reward"])}
        self.trace.write(json.dumps(record) + "\n")
        self.trace.flush()
        return output


def _number(value) -> float | None:
    """A reward as a float (a reward file may return a 0-d tensor)."""
    return None if value is None else float(value)
