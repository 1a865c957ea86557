"""AdamW over stacked parameters with one learning rate per committee member.

Every parameter has a leading member axis; ``lr_per_member`` (M,) scales each member's
update, so M members trained together follow exactly the steps each would take alone
(Adam is element-wise). A member whose rate is 0 is frozen (no decay either).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class StackedAdamW:
    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        lr_per_member: torch.Tensor,
        *,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr = lr_per_member.clone().to(torch.float64)
        self.weight_decay = weight_decay
        self.betas = betas
        self.eps = eps
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor | None]) -> None:
        """One update from ``grads`` (same order as ``params``; None means zero)."""
        self.step_count += 1
        beta1, beta2 = self.betas
        bias1 = 1 - beta1**self.step_count
        bias2 = 1 - beta2**self.step_count
        # the rates live on the host (the trainer changes them member by member); one copy
        # a step to where the parameters are
        member_lr = self.lr.to(self.params[0].device) if self.params else self.lr
        for p, g, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            g = torch.zeros_like(p) if g is None else g
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            # a tensor with a member axis of 1 is shared by all members (joint training,
            # which keeps their rates equal): member 0's rate
            rates = member_lr if p.shape[0] == len(self.lr) else member_lr[:1]
            lr = rates.to(p.dtype).reshape(-1, *([1] * (p.ndim - 1)))
            update = (m / bias1) / ((v / bias2).sqrt() + self.eps) + self.weight_decay * p
            p.sub_(lr * update)
