"""Two-turn agent for the configuration-matrix test (OpenRLHF's ``--train.agent_func_path`` protocol).

The first response is scored as the half-filtered test reward scores (``half_filtered_reward.py``):
prompts whose label is a multiple of 3 get +1 for every sample (an all-correct group), the others
alternate +1 / -1 (mixed groups), so that filters and dynamic filtering have groups of both kinds with
the tiny random model. It then gets an environment feedback turn ("Check your answer.") and a second
turn, scored 0, if the length budget leaves room for one (OpenRLHF gives every turn the whole rest of
it, which a random model's first turn often fills).
"""

import itertools
from collections import defaultdict

import torch
from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor

FEEDBACK = "\nCheck your answer.\n"
_alternate = defaultdict(lambda: itertools.cycle((1.0, -1.0)))


class TwoTurnInstance(AgentInstanceBase):
    def __init__(self, *args, **kwargs):
        self.turns = 0

    async def step(self, states: dict, **kwargs) -> dict:
        self.turns += 1
        done = self.turns == 2
        label = states["label"]
        reward = 0.0 if done else 1.0 if int(label) % 3 == 0 else next(_alternate[label])
        return {"rewards": torch.tensor(reward), "scores": torch.tensor(reward),
                "environment_feedback": "" if done else FEEDBACK, "done": done,
                "sampling_params": states["sampling_params"], "extra_logs": {"turns": torch.tensor(float(self.turns))}}


class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self):
        super().__init__(TwoTurnInstance)
