"""Our actor trainer on a tiny Llama in this process, without Ray or DeepSpeed.

:class:`InProcessStrategy` stands in for OpenRLHF's DeepSpeed strategy (a GPU/DeepSpeed piece the code
under test only calls): it does what DeepSpeed does with a loss (scale by 1 / gradient-accumulation
steps, average the gradients over the data-parallel ranks of a gloo group, step at the accumulation
boundary) and records the gradient of every optimizer step. The trainer, its replay buffer, OpenRLHF's
``ppo_train`` / ``training_step``, the loss normalisers and our policy loss are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from openrlhf.models import Actor
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ray import ppo_actor
from transformers import LlamaConfig, LlamaForCausalLM

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.reaches.patching import swapped
from openrlhf_ext.trainer.actors import ExtActorPPOTrainer

VOCAB = 64


class InProcessStrategy:
    """What OpenRLHF's trainer asks of its DeepSpeed strategy, done as DeepSpeed does it (module docstring)."""

    ring_attn_group = None

    def __init__(self, args, accumulated_gradient: int = 1) -> None:
        self.args = args
        self.accumulated_gradient = accumulated_gradient
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.step_gradients: list[dict[str, torch.Tensor]] = []
        self._micro_steps = 0

    def is_rank_0(self) -> bool:
        return not dist.is_initialized() or dist.get_rank() == 0

    def backward(self, loss, model, optimizer) -> None:
        (loss / self.accumulated_gradient).backward()

    def optimizer_step(self, optimizer, model, scheduler, name) -> None:
        self._micro_steps += 1
        if self._micro_steps % self.accumulated_gradient:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if self.world_size > 1:
                dist.all_reduce(p.grad)
                p.grad /= self.world_size
        self.step_gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()

    def get_grad_norm(self, model) -> float:
        return 0.0

    def all_reduce(self, data, op: str = "mean"):
        if isinstance(data, dict):
            return {k: self.all_reduce(v, op) for k, v in data.items()}
        if self.world_size == 1:
            return data
        value = torch.tensor([float(data)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return value.item() / (self.world_size if op == "mean" else 1)


def resolve_args(*flags: str):
    return resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py",
                                 "--n_samples_per_prompt", "4", "--init_kl_coef", "0", *flags])


def actor_trainer(model_dir: Path, args, accumulated_gradient: int = 1, micro_batch_size: int = 1,
                  lr: float = 1e-3) -> ExtActorPPOTrainer:
    """Our actor trainer on a tiny Llama, built from seed 0 (the same weights on every call and rank)."""
    if not (Path(model_dir) / "config.json").exists():
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=1, num_key_value_heads=1)).save_pretrained(model_dir)
    actor = Actor(str(model_dir), attn_implementation="sdpa")
    actor.model.float()  # loaded as OpenRLHF's bf16; fp32 keeps the compared numbers exact
    optimizer = torch.optim.SGD(actor.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    strategy = InProcessStrategy(args, accumulated_gradient)
    # The stock constructor ends with a cross-process barrier and a CUDA sync (nothing to wait for here)
    # and formats the replay buffer's device as f"cuda:{current_device()}" (the buffer then stays on CPU).
    with swapped(ppo_actor, "torch_dist_barrier_and_cuda_sync", lambda: None), \
            swapped(torch.cuda, "current_device", lambda: 0):
        trainer = ExtActorPPOTrainer(strategy, actor, None, optimizer, scheduler,
                                     micro_train_batch_size=micro_batch_size, dataloader_pin_memory=False)
    trainer.replay_buffer.cpu_offload = False
    return trainer


def rows(action_masks: list[list[int]], seed: int, *, advantages: list[float] | None = None,
         old_log_prob: float | None = None) -> Experience:
    """Rows of 3 prompt tokens + 5 response positions (a response shorter than 5 is right-padded);
    a row filtered out of the loss has an all-zero action mask. ``advantages`` (one per row) replaces the
    random ones; ``old_log_prob`` replaces the rollout's old log-probs."""
    gen = torch.Generator().manual_seed(seed)
    n = len(action_masks)
    mask = torch.tensor(action_masks, dtype=torch.bool)
    lengths = torch.tensor([sum(m) or 5 for m in action_masks])  # a filtered row keeps its whole response
    attention = (torch.arange(8).expand(n, 8) < 3 + lengths.unsqueeze(1)).long()
    adv = torch.randn(n, 5, generator=gen) if advantages is None else torch.tensor(advantages).unsqueeze(1).expand(n, 5)
    old = torch.full((n, 5), -4.0) + 0.1 * torch.randn(n, 5, generator=gen)
    if old_log_prob is not None:
        old = torch.full((n, 5), old_log_prob)
    return Experience(
        sequences=torch.randint(1, VOCAB, (n, 8), generator=gen) * attention,
        attention_mask=attention,
        action_mask=mask,
        action_log_probs=old,
        base_action_log_probs=old.nan_to_num(-4.0) - 0.05,
        advantages=adv * mask,
        returns=torch.zeros(n, 5),
        info={"reward": torch.arange(n, dtype=torch.float32)},
    )
