"""A whole training step (forward, backward, optimizer update) captured as one CUDA graph.

A small network's step is bound by kernel launches, not arithmetic: replaying the step's
hundreds of kernels as one graph removes the Python and launch cost of each. Both trainers
use it the same way: `step(*inputs)` is a function of device tensors only (batch indices,
random numbers, the learning rate held in a tensor the optimizer reads), so the graph and an
eager call compute the same thing on the same inputs.
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn

WARMUP_STEPS = 3
"""Eager steps before the capture: they allocate the gradients and the optimizer state."""


def cuda_graphed(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: Callable[..., torch.Tensor],
    example_inputs: Sequence[torch.Tensor],
) -> Callable[..., torch.Tensor]:
    """Captures `step` as one CUDA graph; the returned function copies its inputs into the
    graph's and replays it, returning the graph's output tensor (overwritten by the next replay).

    PyTorch's whole-network capture recipe: warm-up steps, then the capture, both on one side
    stream (so every autograd node, AccumulateGrad included, runs on the stream it was created
    on). The model and optimizer are then put back, in place, to their state before the
    warm-up, so no step is taken twice: parameters and buffers (BN's running statistics) are
    restored, and optimizer state that the warm-up created is zeroed; a zero momentum buffer
    makes the first replayed step equal to SGD's first step (no dampening).
    """
    state = [*model.parameters(), *model.buffers()]
    saved = [t.detach().clone() for t in state]
    saved_optimizer = {
        id(param): {k: v.clone() for k, v in param_state.items() if torch.is_tensor(v)}
        for param, param_state in optimizer.state.items()
    }
    static_inputs = [x.clone() for x in example_inputs]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    try:
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_STEPS):
                step(*static_inputs)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            static_output = step(*static_inputs)
    finally:
        torch.cuda.current_stream().wait_stream(stream)
        with torch.no_grad():
            for t, s in zip(state, saved, strict=True):
                t.copy_(s)
            for param, param_state in optimizer.state.items():
                before = saved_optimizer.get(id(param), {})
                for key, value in param_state.items():
                    if torch.is_tensor(value) and key in before:
                        value.copy_(before[key])
                    elif torch.is_tensor(value):
                        value.zero_()

    def replay(*inputs: torch.Tensor) -> torch.Tensor:
        for static, value in zip(static_inputs, inputs, strict=True):
            static.copy_(value)
        graph.replay()
        return static_output

    return replay
