import sys

from openrlhf_ext.platform import install_import_shims, vllm_is_real


def test_openrlhf_ray_modules_import_on_cpu():
    install_import_shims()
    import openrlhf.trainer.ppo_trainer  # noqa: F401  (imports vllm and flash_attn at module level)
    import openrlhf.trainer.ray.ppo_actor  # noqa: F401

    assert "flash_attn_2_cuda" in sys.modules


def test_vllm_shim_fails_loudly_when_used():
    install_import_shims()
    if vllm_is_real():
        return
    import vllm

    params = vllm.SamplingParams(temperature=0.5, max_tokens=8)
    assert params.max_tokens == 8
    try:
        vllm.AsyncEngineArgs(model="x")
    except RuntimeError as err:
        assert "CPU generator actors" in str(err)
    else:
        raise AssertionError("the vLLM stand-in must refuse to build an engine")
