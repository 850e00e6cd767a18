"""The optimizer of packed Inception members (bnrepro.train_packed): each member's momentum SGD
with its own learning rate and L2 (`MemberSGD`), the rate following its single run's schedule
(`MemberSchedule`). A module of its own: an optimizer over the rows of one flat buffer, which
reads per member what torch.optim.SGD reads per parameter group, is a piece to read (and test)
apart from the loop that drives it.
"""

from collections.abc import Callable

import torch

from bnrepro.inception_recipe import Settings, learning_rate
from bnrepro.models.inception import Inception

SCHEDULE_BLOCK = 1000
"""Steps of learning rates computed at a time (`MemberSchedule`)."""


class MemberSGD(torch.optim.Optimizer):
    """Momentum SGD with a learning rate and an L2 coefficient per member of a packed model.

    The update is torch.optim.SGD's (g += wd * w for weights, not biases or BN's gamma and
    beta; buf = momentum * buf + g; w -= lr * buf, or Nesterov's), each element reading the
    rate and L2 of the member whose row it is in. To take the step in a handful of kernels
    whatever the number of layers, the model's parameters are made views into one flat
    buffer, and their gradients views into another, which backward accumulates into in place;
    the flat buffer is this optimizer's one parameter, so its state_dict is the usual one.
    `lr` is a (members,) tensor on the model's device that the trainer fills every step.
    """

    def __init__(
        self,
        model: Inception,
        lr: torch.Tensor,
        weight_decay: list[float],
        momentum: float,
        nesterov: bool,
    ):
        params = list(model.parameters())
        members, device = model.members, params[0].device
        total = sum(p.numel() for p in params)
        flat = torch.zeros(total, device=device)
        self.grad = torch.zeros(total, device=device)
        member_of, decays, offset = [], [], 0
        rows = torch.arange(members, device=device, dtype=torch.int32)
        decay = torch.tensor(weight_decay, device=device)
        for p in params:
            n = p.numel()
            view = flat[offset : offset + n].as_strided(p.shape, p.stride())
            view.copy_(p.detach())
            p.data = view
            p.grad = self.grad[offset : offset + n].as_strided(p.shape, p.stride())
            member_of.append(rows.repeat_interleave(n // members))
            decays.append(
                (decay if p.ndim > 1 else torch.zeros_like(decay)).repeat_interleave(n // members)
            )
            offset += n
        super().__init__([flat], {"lr": lr, "momentum": momentum, "nesterov": nesterov})
        self.member_of = torch.cat(member_of)
        self.decay = torch.cat(decays)

    @property
    def flat(self) -> torch.Tensor:
        return self.param_groups[0]["params"][0]

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zeroes the flat gradient; the parameters' gradients stay views into it."""
        self.grad.zero_()

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> None:
        group, flat = self.param_groups[0], self.flat
        state = self.state[flat]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(flat)
        buf = state["momentum_buffer"]
        grad = torch.addcmul(self.grad, self.decay, flat)
        buf.mul_(group["momentum"]).add_(grad)
        direction = grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
        flat.addcmul_(group["lr"].index_select(0, self.member_of), direction, value=-1)

    @torch.no_grad()
    def finite_members(self) -> torch.Tensor:
        """(members,) bool: whether each member's weights are all finite."""
        bad = (~torch.isfinite(self.flat)).float()
        members = len(self.param_groups[0]["lr"])
        counts = torch.zeros(members, device=bad.device).index_add_(0, self.member_of, bad)
        return counts == 0

    @torch.no_grad()
    def retire(self, member: int) -> None:
        """Zeroes a member's weights, momentum and L2 (its rate is the trainer's to zero)."""
        rows = self.member_of == member
        self.flat.masked_fill_(rows, 0.0)
        self.decay.masked_fill_(rows, 0.0)
        if "momentum_buffer" in self.state[self.flat]:
            self.state[self.flat]["momentum_buffer"].masked_fill_(rows, 0.0)


class MemberSchedule:
    """Each member's learning rate at each step, (members,) on the device: the single run's
    `learning_rate` computed in double on the CPU, as that run computes it, `SCHEDULE_BLOCK`
    steps at a time and moved to the device at once; a retired member's rate is 0."""

    def __init__(self, settings: list[Settings], decay_rate: float, device: torch.device):
        self.settings, self.decay_rate, self.device = settings, decay_rate, device
        self.retired: set[int] = set()
        self._block, self._rates = -1, torch.empty(0)

    def rate(self, member: int, step: int) -> float:
        if member in self.retired:
            return 0.0
        s = self.settings[member]
        return learning_rate(step, s.lr, self.decay_rate, s.decay_steps)

    def __call__(self, step: int) -> torch.Tensor:
        block, position = divmod(step, SCHEDULE_BLOCK)
        if block != self._block:
            steps = range(block * SCHEDULE_BLOCK, (block + 1) * SCHEDULE_BLOCK)
            table = [[self.rate(k, t) for k in range(len(self.settings))] for t in steps]
            self._block, self._rates = block, torch.tensor(table).to(self.device)
        return self._rates[position]

    def retire(self, member: int) -> None:
        self.retired.add(member)
        self._block = -1
