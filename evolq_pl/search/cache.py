"""What the evaluator's stage-input cache depends on (DESIGN §5): which modules each stage reads first, the
versions of their tensors (the cache key: no caller has to say when an input went stale), and the memory it may
use."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

Key = tuple[tuple[int, int, int], ...]


def default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        avail = 8 << 30
    return avail // 4


def first_use(model: nn.Module, stages: Sequence[Callable], x: torch.Tensor) -> tuple[list[list[nn.Module]], list[int]]:
    """One forward of ``x`` stage by stage: the modules whose own tensors each stage reads first, and each
    stage's input size in bytes. A module counts from the stage that first calls it or receives it as an
    argument (a quantizer whose scale a LayerNorm reads); one never called goes with its nearest called
    ancestor, or with stage 0 (the model's own tokens and embeddings)."""
    first: dict[nn.Module, int] = {}
    current = [0]

    def hook(mod: nn.Module, args: tuple) -> None:
        for m in (mod, *(a for a in args if isinstance(a, nn.Module))):
            first.setdefault(m, current[0])

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()]
    sizes = []
    try:
        for i, stage in enumerate(stages):
            current[0] = i
            sizes.append(x.numel() * x.element_size())
            x = stage(x)
    finally:
        for h in handles:
            h.remove()
    owners: list[list[nn.Module]] = [[] for _ in stages]

    def place(mod: nn.Module, inherited: int) -> None:
        stage = first.get(mod, inherited)
        owners[stage].append(mod)
        for child in mod.children():
            place(child, stage)

    place(model, 0)
    return owners, sizes


def tensor_key(modules: Sequence[nn.Module]) -> Key:
    """Identity and in-place version of every parameter and buffer the modules own directly."""
    return tuple((id(t), t.data_ptr(), t._version) for m in modules
                 for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)
