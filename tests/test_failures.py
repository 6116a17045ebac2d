"""Failures after start: one line naming the failed part, its cause and where the full log is."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest

from openrlhf_ext.cli.train_config import resolve_train_config, run_stock_main
from openrlhf_ext.reporting.failures import RewardUnavailable, RunFailure, check_rewards, describe_failure

FLAGS = ["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py", "--advantage_estimator",
         "reinforce"]


def closed_port() -> int:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_assertion_while_training_is_not_reported_as_a_bad_flag():
    def train(args):
        raise AssertionError("deepspeed: checkpoint shard missing")

    with pytest.raises(AssertionError, match="checkpoint shard missing"):
        run_stock_main(FLAGS, train)
    assert resolve_train_config(FLAGS).actor.model_name_or_path == "/m"


def test_run_failure_exits_1_with_one_line(capsys, monkeypatch):
    import openrlhf_ext.job.launch as launch_module
    from openrlhf_ext.cli.train_ppo_ray import main

    def failing_launch(args):
        raise RunFailure("_ExtPPOTrainer.fit (pid 7, node 127.0.0.1) failed: RewardUnavailable: ... (full log: x)")

    monkeypatch.setattr(launch_module, "launch", failing_launch)
    with pytest.raises(SystemExit) as exit_info:
        main(FLAGS)
    assert exit_info.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert err == ["python -m openrlhf_ext.cli.train_ppo_ray: error: _ExtPPOTrainer.fit (pid 7, node 127.0.0.1) "
                   "failed: RewardUnavailable: ... (full log: x)"]


def samples(*rewards):
    return [SimpleNamespace(rewards=reward) for reward in rewards]


def test_samples_without_reward_name_the_unreachable_server():
    url = f"http://127.0.0.1:{closed_port()}/get_reward"
    with pytest.raises(RewardUnavailable) as info:
        check_rewards(samples(1.0, None, None), [url])
    assert str(info.value).startswith(f"no reward for 2 of 3 rollout samples from --reward.remote_url {url}: ")
    assert "cannot connect: Connection refused" in str(info.value)
    with pytest.raises(RewardUnavailable, match="reward function raised"):
        check_rewards(samples(None), ["/r/reward.py"])
    check_rewards(samples(1.0, 0.0), [url])  # every sample scored: nothing to report
    check_rewards(samples(None), None)  # a reward model, not a remote reward


@pytest.mark.slow
def test_ray_failures_name_the_innermost_actor(local_ray, tmp_path):
    ray = local_ray

    @ray.remote(num_cpus=0)
    class RewardClient:
        def score(self):
            raise RewardUnavailable("no reward for 4 of 4 rollout samples from --reward.remote_url http://x")

        def die(self):
            os._exit(1)

    @ray.remote(num_cpus=0)
    class Trainer:
        def fit(self, method):
            client = RewardClient.remote()
            return ray.get(getattr(client, method).remote())

    trainer = Trainer.remote()
    with pytest.raises(ray.exceptions.RayError) as raised:
        ray.get(trainer.fit.remote("score"))
    line = describe_failure(raised.value, str(tmp_path))
    assert line.startswith("RewardClient.score (pid ")
    assert "failed: RewardUnavailable: no reward for 4 of 4 rollout samples from --reward.remote_url http://x" in line
    assert f"full log: {tmp_path / 'error.log'}, Ray worker log: " in line
    full = (tmp_path / "error.log").read_text()
    assert "ray::RewardClient.score()" in full and "in score" in full  # the inner task's traceback
    assert os.path.exists(line.rsplit("Ray worker log: ", 1)[1].rstrip(")"))

    with pytest.raises(ray.exceptions.RayError) as raised:
        ray.get(trainer.fit.remote("die"))
    line = describe_failure(raised.value, str(tmp_path))
    assert line.split(" (pid ")[0].endswith("RewardClient")
    assert ") failed: actor died: " in line and "Ray worker log: " in line
    assert "\n" not in line
