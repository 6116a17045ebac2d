"""The table of every reach into another library (``openrlhf_ext.reaches``): complete, resolvable, documented."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from openrlhf_ext.reaches import REACHES, Where, rows, scoped, table_markdown
from openrlhf_ext.reaches.patching import is_patched


def _owner_and_attr(target: str):
    module, _, path = target.partition(":")
    owner = importlib.import_module(module)
    *parents, attr = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    return owner, attr


@pytest.mark.parametrize("reach", REACHES, ids=lambda r: f"{r.where.value}:{r.target}")
def test_every_target_exists_and_every_replacement_resolves(reach):
    owner, attr = _owner_and_attr(reach.target)
    assert hasattr(owner, attr), f"{reach.target} moved: the table must follow the library"
    assert callable(reach.factory()) or reach.value, reach
    assert reach.why and (reach.value is None) != (reach.wrap is None)


def test_scoped_restores_and_a_moved_target_fails_at_start():
    import openrlhf.trainer.ppo_trainer as stock

    from openrlhf_ext.trainer.ppo_trainer import ExtPPOTrainer

    original = stock.PPOTrainer
    with scoped(Where.DRIVER):
        assert stock.PPOTrainer is ExtPPOTrainer
    assert stock.PPOTrainer is original

    from openrlhf_ext.reaches.patching import apply_patches

    with pytest.raises(AttributeError, match="no longer exists"):
        apply_patches([("openrlhf.trainer.ppo_trainer:NoSuchTrainer", lambda original: original)], defer=False)


def test_documented_table_is_the_code_table():
    doc = (Path(REPO_ROOT) / "docs" / "architecture.md").read_text()
    assert table_markdown() in doc, "regenerate the table in docs/architecture.md from reaches.table_markdown()"


def test_every_process_kind_has_its_rows():
    assert {reach.where for reach in REACHES} == set(Where)
    assert [r.target for r in rows(Where.DRIVER)] == ["openrlhf.trainer.ppo_trainer:PPOTrainer",
                                                      "openrlhf.cli.train_ppo_ray:PolicyModelActor",
                                                      "openrlhf.trainer.ray.vllm_engine:RolloutRayActor"]


GROUND_IMPORT = """
import sys
before = set(sys.modules)
import openrlhf_ext.algorithms, openrlhf_ext.rewards, openrlhf_ext.data, openrlhf_ext.models
after = set(sys.modules) - before
assert "vllm" not in after and "flash_attn_2_cuda" not in after, sorted(after)
assert not any(m.startswith(("openrlhf.", "ray", "deepspeed")) for m in after), sorted(after)
assert sys.meta_path[0].__class__.__module__ != "openrlhf_ext.reaches.patching"
print("ok")
"""


def test_importing_the_ground_layer_has_no_side_effects():
    result = subprocess.run([sys.executable, "-c", GROUND_IMPORT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_policy_worker_reach_is_permanent_in_its_process():
    code = ("from openrlhf_ext.reaches import Where, apply; import openrlhf_ext.trainer; "
            "print(apply(Where.POLICY_WORKER))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer" in result.stdout
    assert not is_patched("openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer")  # not in this process
