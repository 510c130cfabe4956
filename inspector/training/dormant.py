"""Dead ReLU units of a VGG16: find them and give them a fresh start without changing what the model computes.

A unit (a conv channel, or a hidden unit of the classifier) whose ReLU output is zero on every probe tile gets no
gradient and never comes back: its weights are lost capacity. The narrow widths lose a lot this way (the ÷8 demo
model had 30 of 64 conv5_3 channels dead, the widened ÷8,8,8,4,4 one 73 of 128: half of what the classifier
sees). Recycling (ReDo, Sokar et al. 2023): re-draw the dead unit's incoming weights at the scale of its live
neighbours, zero its bias and its outgoing weights — the output is unchanged (the unit contributed nothing and
now feeds nothing), and the unit fires again, so training can use it. A unit counts as dead only if it fires on
none of the probe tiles (spiders included), so a sparse spider detector is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from inspector.training.vgg import VGG16


@dataclass(frozen=True)
class _Unit:
    name: str  # conv1_1 ... conv5_3, fc1, fc2
    producer: nn.Conv2d | nn.Linear
    bn: nn.BatchNorm2d | None
    relu: nn.Module
    consumer: nn.Conv2d | nn.Linear
    fan_out: int  # consumer input columns per unit (49 where the last conv feeds the flattened 7x7 map)


def _units(model: VGG16) -> list[_Unit]:
    names = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1)]
    found: list[tuple[nn.Conv2d, nn.BatchNorm2d | None, nn.Module]] = []
    conv: nn.Conv2d | None = None
    bn: nn.BatchNorm2d | None = None
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            conv, bn = m, None
        elif isinstance(m, nn.BatchNorm2d):
            bn = m
        elif isinstance(m, nn.ReLU) and conv is not None:
            found.append((conv, bn, m))
    fc = [m for m in model.classifier if isinstance(m, nn.Linear)]
    relus = [m for m in model.classifier if isinstance(m, nn.ReLU)]
    units = [
        _Unit(names[k], c, b, r, found[k + 1][0] if k + 1 < len(found) else fc[0], 1 if k + 1 < len(found) else 49)
        for k, (c, b, r) in enumerate(found)
    ]
    units += [_Unit(f"fc{k + 1}", fc[k], None, relus[k], fc[k + 1], 1) for k in range(2)]
    return units


@torch.no_grad()
def dead_units(model: VGG16, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per unit layer, a bool mask of the units whose ReLU output is 0 on every sample of ``x`` (eval mode)."""
    units = _units(model)
    peaks: dict[str, torch.Tensor] = {}
    hooks = []
    for u in units:

        def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = u.name) -> None:
            dims = (0, 2, 3) if out.dim() == 4 else (0,)
            peak = out.amax(dim=dims)
            peaks[name] = torch.maximum(peaks[name], peak) if name in peaks else peak

        hooks.append(u.relu.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, x.shape[0], 64):
            model(x[i : i + 64])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {u.name: peaks[u.name] <= 0 for u in units}


def _zero_state(opt: torch.optim.Optimizer | None, p: torch.Tensor, index: tuple[slice | torch.Tensor, ...]) -> None:
    state = opt.state.get(p) if opt is not None else None
    for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
        if state and isinstance(state.get(key), torch.Tensor):
            state[key][index] = 0.0


@torch.no_grad()
def recycle_dead_units(
    model: VGG16, x: torch.Tensor, gen: torch.Generator, opt: torch.optim.Optimizer | None = None
) -> dict[str, int]:
    """Re-draw the dead units found on ``x``; returns how many per layer (only layers with some).

    On ``x`` the model's outputs are unchanged (logits, and every fam map but the recycled channels' own layer,
    which gains the new channels' activations). The optimizer's moments of the touched weights are zeroed so Adam does not push them with stale history.
    """
    dead = dead_units(model, x)
    counts: dict[str, int] = {}
    for u in reversed(_units(model)):  # deepest first: a re-drawn row is then cleared where it reads a new unit
        idx = torch.nonzero(dead[u.name]).flatten()
        if idx.numel() == 0:
            continue
        live = torch.nonzero(~dead[u.name]).flatten()
        w = u.producer.weight
        std = float(w[live].std()) if live.numel() > 1 else float(w.std())
        # drawn on the CPU generator, then moved: the same draws on any device
        w[idx] = torch.randn((len(idx), *w.shape[1:]), generator=gen).to(w.device) * std
        _zero_state(opt, w, (idx,))
        if u.producer.bias is not None:
            u.producer.bias[idx] = 0.0
            _zero_state(opt, u.producer.bias, (idx,))
        if u.bn is not None:
            u.bn.weight[idx], u.bn.bias[idx] = 1.0, 0.0
            assert u.bn.running_mean is not None and u.bn.running_var is not None
            u.bn.running_mean[idx], u.bn.running_var[idx] = 0.0, 1.0
        cols = (idx[:, None] * u.fan_out + torch.arange(u.fan_out, device=idx.device)[None, :]).reshape(-1)
        u.consumer.weight[:, cols] = 0.0
        _zero_state(opt, u.consumer.weight, (slice(None), cols))
        counts[u.name] = int(idx.numel())
    return dict(reversed(counts.items()))


__all__ = ["dead_units", "recycle_dead_units"]
