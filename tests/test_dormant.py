"""Dead ReLU units: found only when they fire on no probe sample; re-drawn without changing the model's output."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from inspector.training.dormant import dead_units, recycle_dead_units  # noqa: E402
from inspector.training.vgg import VGG16  # noqa: E402


def _kill(model: VGG16, conv_index: int, channels: list[int]) -> None:
    """Make channels of the conv at `conv_index` (0-based among the 13) never fire: no weights, negative bias."""
    conv = model.conv_layers()[conv_index]
    with torch.no_grad():
        conv.weight[channels] = 0.0
        assert conv.bias is not None
        conv.bias[channels] = -1.0


def test_a_model_without_dead_units_is_left_alone() -> None:
    torch.manual_seed(0)
    model = VGG16(width=16).eval()
    x = torch.randn(8, 3, 224, 224)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dead = {k: int(v.sum()) for k, v in dead_units(model, x).items() if int(v.sum())}
    counts = recycle_dead_units(model, x, torch.Generator().manual_seed(0))
    assert counts == dead  # whatever a random init leaves dead, and nothing else
    if not counts:
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("conv_index", "layer"), [(3, "conv2_2"), (12, "conv5_3")])
def test_dead_channels_are_redrawn_and_the_output_is_kept(conv_index: int, layer: str) -> None:
    torch.manual_seed(1)
    model = VGG16(width=16).eval()
    _kill(model, conv_index, [0, 5])
    x = torch.randn(6, 3, 224, 224)
    assert dead_units(model, x)[layer][[0, 5]].all()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(x)[0].sum().backward()
    opt.step()  # the optimizer now holds moments for every weight
    model.eval()
    with torch.no_grad():
        ref = model(x)
    counts = recycle_dead_units(model, x, torch.Generator().manual_seed(0), opt)
    assert counts.get(layer, 0) >= 2
    after_dead = dead_units(model, x)
    assert not after_dead[layer][[0, 5]].any()  # they fire again
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-5)  # logits unchanged
    conv = model.conv_layers()[conv_index]
    assert float(conv.weight[[0, 5]].abs().sum()) > 0
    state = opt.state[conv.weight]
    assert float(state["exp_avg"][[0, 5]].abs().sum()) == 0.0 and float(state["exp_avg_sq"][[0, 5]].abs().sum()) == 0.0


def test_dead_hidden_units_of_the_classifier_are_redrawn() -> None:
    torch.manual_seed(2)
    model = VGG16(width=16).eval()
    fc1 = model.classifier[0]
    with torch.no_grad():
        fc1.weight[:3] = 0.0
        fc1.bias[:3] = -1.0
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)[0]
    counts = recycle_dead_units(model, x, torch.Generator().manual_seed(0))
    assert counts.get("fc1", 0) >= 3
    assert float(model.classifier[3].weight[:, :3].abs().sum()) == 0.0  # fed nothing yet
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], ref, rtol=1e-5, atol=1e-5)
