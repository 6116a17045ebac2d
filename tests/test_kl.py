"""KL estimators k1/k2/k3 (docs/algorithms.md §4): values, and the gradients they give in the loss / in the reward.

The gradient checks use a categorical policy π_θ = softmax(θ) over 5 actions and a fixed
reference, and take expectations over actions exactly (Σ_a π(a)·…) instead of sampling, so the
identities of kl.py's docstring are checked to float64 precision.
"""

from __future__ import annotations

import math

import pytest
import torch
from openrlhf.models.utils import compute_approx_kl

from openrlhf_ext.algorithms import kl_estimate


def test_values_closed_form():
    # lr = log 2 and lr = -log 2
    logp = torch.tensor([math.log(0.5), math.log(0.25)], dtype=torch.float64)
    ref = torch.tensor([math.log(0.25), math.log(0.5)], dtype=torch.float64)
    ln2 = math.log(2)
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), torch.tensor([ln2, -ln2], dtype=torch.float64))
    torch.testing.assert_close(kl_estimate(logp, ref, "k2"), torch.tensor([ln2**2 / 2] * 2, dtype=torch.float64))
    # k3 = exp(-lr) - 1 + lr: 1/2 - 1 + ln2 and 2 - 1 - ln2
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), torch.tensor([-0.5 + ln2, 1 - ln2], dtype=torch.float64))


def test_clamp_guards_overflow_and_matches_stock():
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(4, 9, generator=gen) * 6
    ref = torch.randn(4, 9, generator=gen) * 6
    logp[0, 0], ref[0, 0] = -200.0, 0.0  # exp(-lr) = exp(200) overflows float32 without the guard
    for estimator in ("k1", "k2", "k3"):
        ours = kl_estimate(logp, ref, estimator)
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours, compute_approx_kl(logp, ref, kl_estimator=estimator), rtol=1e-6, atol=1e-6)
    assert kl_estimate(logp, ref, "k3")[0, 0].item() == 10.0
    assert kl_estimate(logp, ref, "k3", clamp=None)[0, 0].item() == math.inf


def test_bad_arguments():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="shape"):
        kl_estimate(torch.zeros(2), torch.zeros(3), "k1")


@pytest.fixture()
def categorical():
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    ref_logp = torch.log_softmax(torch.randn(5, generator=gen, dtype=torch.float64), -1)
    return theta, ref_logp


def _reverse_kl(logp, ref_logp):
    return (logp.exp() * (logp - ref_logp)).sum()


def _forward_kl(logp, ref_logp):
    return (ref_logp.exp() * (ref_logp - logp)).sum()


def _expected_in_loss_gradient(theta, ref_logp, estimator):
    """∇θ of E_{a~π}[k(a)] with the sampling distribution held fixed (pathwise, as in training)."""
    logp = torch.log_softmax(theta, -1)
    surrogate = (logp.exp().detach() * kl_estimate(logp, ref_logp, estimator, clamp=None)).sum()
    return torch.autograd.grad(surrogate, theta)[0]


def test_expected_values(categorical):
    theta, ref_logp = categorical
    logp = torch.log_softmax(theta, -1).detach()
    p = logp.exp()
    kl = _reverse_kl(logp, ref_logp)
    # k1 and k3 are unbiased estimates of KL(π‖π_ref); k2 is not
    assert (p * kl_estimate(logp, ref_logp, "k1", clamp=None)).sum().item() == pytest.approx(kl.item(), rel=1e-12)
    assert (p * kl_estimate(logp, ref_logp, "k3", clamp=None)).sum().item() == pytest.approx(kl.item(), rel=1e-12)
    assert (p * kl_estimate(logp, ref_logp, "k2", clamp=None)).sum().item() != pytest.approx(kl.item(), rel=1e-3)


def test_k2_in_loss_has_reverse_kl_gradient(categorical):
    theta, ref_logp = categorical
    exact = torch.autograd.grad(_reverse_kl(torch.log_softmax(theta, -1), ref_logp), theta)[0]
    torch.testing.assert_close(_expected_in_loss_gradient(theta, ref_logp, "k2"), exact, rtol=1e-12, atol=1e-14)


def test_k3_in_loss_has_forward_kl_gradient_not_reverse(categorical):
    theta, ref_logp = categorical
    logp = torch.log_softmax(theta, -1)
    reverse = torch.autograd.grad(_reverse_kl(logp, ref_logp), theta, retain_graph=True)[0]
    forward = torch.autograd.grad(_forward_kl(logp, ref_logp), theta)[0]
    k3 = _expected_in_loss_gradient(theta, ref_logp, "k3")
    torch.testing.assert_close(k3, forward, rtol=1e-12, atol=1e-14)
    assert (k3 - reverse).abs().max() > 1e-2


def test_k1_in_loss_has_zero_expected_gradient(categorical):
    theta, ref_logp = categorical
    grad = _expected_in_loss_gradient(theta, ref_logp, "k1")
    assert grad.abs().max() < 1e-14


def test_k1_in_reward_gives_reverse_kl_gradient(categorical):
    # in reward the estimate is a detached per-token reward: the policy-gradient surrogate is
    # E_a[k1(a) · log π(a)] with k1 detached -> E[k1 ∇log π] = ∇KL(π‖π_ref)
    theta, ref_logp = categorical
    logp = torch.log_softmax(theta, -1)
    k1 = kl_estimate(logp, ref_logp, "k1", clamp=None).detach()
    grad = torch.autograd.grad((logp.exp().detach() * k1 * logp).sum(), theta)[0]
    exact = torch.autograd.grad(_reverse_kl(torch.log_softmax(theta, -1), ref_logp), theta)[0]
    torch.testing.assert_close(grad, exact, rtol=1e-12, atol=1e-14)
