"""Per-token estimators of KL(π_θ ‖ π_ref) (docs/algorithms.md §4; Schulman, "Approximating KL divergence").

With lr = log π_θ(a) − log π_ref(a) for a token a sampled from π_θ:

- k1 = lr                      (unbiased value, high variance, can be negative)
- k2 = lr² / 2                 (biased value, ≥ 0)
- k3 = exp(−lr) − 1 + lr       (unbiased value, ≥ 0)

Placement and gradients (the sample a is drawn from π_θ and not differentiated, as in training):

- *In reward* (REINFORCE++ Eq. 8): the estimate is a detached per-token reward −β·k; the policy
  gradient then carries it as a score-function term. k1 in reward gives the unbiased gradient of
  the reverse KL (E[k1·∇log π] = ∇KL(π_θ‖π_ref)); k3 in reward is an unbiased *value*, not the
  right reward for the reverse-KL gradient.
- *In loss* (GRPO-style β·KL added to the loss and differentiated pathwise):
  E_π[∇k2] = E_π[lr·∇log π] = ∇KL(π_θ ‖ π_ref) exactly — k2 in the loss has the gradient of
  the reverse KL. E_π[∇k3] = E_π[(1 − π_ref/π_θ)·∇log π] = −Σ π_ref·∇log π_θ = ∇KL(π_ref ‖ π_θ):
  k3 in the loss follows the *forward* KL, not the reverse KL it estimates. E_π[∇k1] =
  E_π[∇log π] = 0: k1 in the loss has no gradient in expectation.

``tests/test_kl.py`` checks these three gradient facts exactly on a categorical distribution.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    estimator: str = "k1",
    *,
    clamp: float | None = 10.0,
) -> torch.Tensor:
    """Per-token k1 / k2 / k3 estimate of KL(π_θ ‖ π_ref), computed in at least float32.

    ``clamp`` bounds the estimate to [−clamp, clamp], and for k3 bounds lr from below at −clamp
    before the exponential, so a token the reference finds far likelier than the policy cannot
    overflow exp(−lr); 10 reproduces OpenRLHF 0.11.2's ``compute_approx_kl``. ``None`` gives the
    raw formulas.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"KL estimator {estimator!r} is not valid; choose one of {', '.join(KL_ESTIMATORS)}")
    if log_probs.shape != ref_log_probs.shape:
        raise ValueError(
            f"log_probs shape {tuple(log_probs.shape)} != ref_log_probs shape {tuple(ref_log_probs.shape)}"
        )
    dtype = torch.promote_types(log_probs.dtype, torch.float32)
    log_ratio = log_probs.to(dtype) - ref_log_probs.to(dtype)
    if estimator == "k1":
        value = log_ratio
    elif estimator == "k2":
        value = log_ratio.square() / 2
    else:
        if clamp is not None:
            log_ratio = log_ratio.clamp(min=-clamp)
        value = torch.expm1(-log_ratio) + log_ratio
    if clamp is not None:
        value = value.clamp(min=-clamp, max=clamp)
    return value
