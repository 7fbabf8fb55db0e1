"""Gradient of one LoRA block (and the head) with the backward pass stopped at that block.

Only the block's LoRA tensors and the head require grad. Autograd records an operation only when
one of its inputs requires grad, so the frozen layers below the block run without building a
graph or saving activations, and backpropagation ends at the block by construction: time and
memory grow with depth exactly as in the paper's Fig. 2, with no model-specific forward code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from lola_deft.ml.model import HEAD, LoadedModel


@dataclass
class BlockGradient:
    block: int
    gradients: dict[str, torch.Tensor]
    loss: float  # mean training loss over the local iterations
    iterations: int
    compute_s: float


def select_block(loaded: LoadedModel, block: int | None, head: bool = True) -> list[str]:
    """Make exactly the block's LoRA tensors and the head trainable (None: every block;
    head=False: the block alone, when the coordinator does not want the head's gradient)."""
    if (block is not None and block not in loaded.blocks) or block == HEAD:
        raise ValueError(f"block must be 1..{loaded.num_blocks}, got {block}")
    names = set(loaded.trainable_names()) if block is None else set(loaded.blocks[block])
    if head:
        names |= set(loaded.blocks[HEAD])
    for name, parameter in loaded.model.named_parameters():
        parameter.requires_grad_(name in names)
        parameter.grad = None
    return [name for name in loaded.trainable_names() if name in names]


def block_gradient(
    loaded: LoadedModel,
    block: int | None,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    device: torch.device | str = "cpu",
    slowdown: float = 1.0,
    head: bool = True,
) -> BlockGradient:
    """Average gradient over the given mini-batches (one per local iteration).

    `slowdown` > 1 stretches each iteration by sleeping, to emulate slower hardware on a shared
    testbed machine.
    """
    names = select_block(loaded, block, head)
    model = loaded.model
    model.train()
    params = loaded.parameters_by_name()
    started = time.perf_counter()
    losses: list[float] = []
    batch_list = list(batches)
    if not batch_list:
        raise ValueError("need at least one batch")
    for batch in batch_list:
        iteration_started = time.perf_counter()
        inputs = {key: value.to(device) for key, value in batch.items()}
        output = model(**inputs)
        (output.loss / len(batch_list)).backward()
        losses.append(float(output.loss.detach()))
        if slowdown > 1.0:
            time.sleep((slowdown - 1.0) * (time.perf_counter() - iteration_started))
    gradients = {}
    for name in names:
        grad = params[name].grad
        gradients[name] = torch.zeros_like(params[name]) if grad is None else grad.detach().clone()
    return BlockGradient(
        block=block or 0,
        gradients={name: g.cpu() for name, g in gradients.items()},
        loss=sum(losses) / len(losses),
        iterations=len(batch_list),
        compute_s=time.perf_counter() - started,
    )
