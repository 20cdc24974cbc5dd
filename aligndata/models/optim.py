"""Optimizers (AdamW, LAMB) with open_clip's parameter groups, and ALIGN's warmup + linear-decay schedule.

LAMB (You et al., 2020) as ALIGN used it: Adam moments with bias correction, decoupled weight decay added to the
update, then a per-tensor trust ratio ||w|| / ||update|| (1 where either norm is zero). Biases, norm layers and
the temperature get neither weight decay nor the trust ratio (a trust ratio on a scalar temperature or a bias
initialised at zero makes little sense; this matches the common ``exclude_from_layer_adaptation`` practice).
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0,
                 adapt: bool = True) -> None:
        if lr < 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"invalid LAMB hyper-parameters lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adapt=adapt))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("LAMB does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m_hat = exp_avg / (1 - beta1 ** step)
                v_hat = exp_avg_sq / (1 - beta2 ** step)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update.add(p, alpha=group["weight_decay"])
                trust = 1.0
                if group["adapt"]:
                    w_norm = p.norm(2).float()
                    u_norm = update.norm(2).float()
                    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update = update * trust.to(update.dtype)
                p.add_(update, alpha=-group["lr"])
        return loss


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    # 1-d tensors are biases and norm scales; the temperature is a 0-d scalar.
    return param.ndim < 2 or name.endswith(".bias") or "temperature" in name


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (plain if _no_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "adapt": True},
        {"params": plain, "weight_decay": 0.0, "adapt": False},
    ]


def build_optimizer(name: str, model: torch.nn.Module, lr: float, weight_decay: float) -> Optimizer:
    groups = parameter_groups(model, weight_decay)
    if name == "lamb":
        return Lamb(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        for group in groups:
            group.pop("adapt")
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98), eps=1e-6)
    raise ValueError(f"unknown optimizer {name!r} (choose lamb or adamw)")


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: 0 -> 1 linearly over ``warmup_steps``, then linearly to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = total_steps - step
    span = max(1, total_steps - warmup_steps)
    return max(0.0, remaining / span)


def build_scheduler(optimizer: Optimizer, warmup_steps: int, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_linear(step, warmup_steps, total_steps))


def default_warmup(total_steps: int) -> int:
    """ALIGN warms up over 10k steps; short runs warm up over their first 10%."""
    return min(10_000, max(1, math.ceil(0.1 * total_steps)))
