"""Distillation: the teachers' soft targets (onnxruntime path), the blended class loss, the trainer and CLI checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inspector.model import Model  # noqa: E402
from inspector.synth.tiles import TileSet, save_tile_set  # noqa: E402
from inspector.training.distill import teacher_spider_prob  # noqa: E402
from inspector.training.export import export_model  # noqa: E402
from inspector.training.train import Trainer, TrainSettings, class_loss  # noqa: E402
from inspector.training.vgg import VGG16  # noqa: E402
from tests.test_train import _tiny_tiles, _train_cli  # noqa: E402


def _teacher(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    net = VGG16(width=16, batch_norm=False, dropout=0.0).eval()
    with torch.no_grad():  # a classifier bias that makes its probabilities differ visibly from 0.5
        net.classifier[-1].bias.copy_(torch.tensor([0.0, 0.3 * seed]))
    export_model(net, path, name=path.stem)
    return path


def _probs(path: Path, images: np.ndarray) -> np.ndarray:
    with Model(path, providers=("cpu",), threads=1, batch_size=4) as m:
        return m.infer(images).spider_prob


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("teachers")
    return [_teacher(d / "a.onnx", 1), _teacher(d / "b.onnx", 2)]


def test_teacher_targets_are_the_mean_of_the_models_in_tile_order(teachers: list[Path]) -> None:
    tiles = _tiny_tiles(6, seed=3)
    a, b = (_probs(t, tiles.images) for t in teachers)
    assert not np.allclose(a, b, atol=1e-3)  # two different teachers
    got = teacher_spider_prob(teachers, tiles, batch=4, threads=1)  # 6 tiles over batches of 4: order kept
    assert got.shape == (6,) and got.dtype == np.float32
    np.testing.assert_allclose(got, (a + b) / 2, atol=1e-6)
    mirrored = _probs(teachers[0], np.ascontiguousarray(tiles.images[:, :, ::-1]))
    both = teacher_spider_prob(teachers[:1], tiles, hflip=True, batch=4, threads=1)
    np.testing.assert_allclose(both, (a + mirrored) / 2, atol=1e-6)


def test_teacher_targets_of_no_tiles_and_no_teacher(teachers: list[Path]) -> None:
    empty = TileSet(
        np.zeros((0, 224, 224, 3), np.uint8), np.zeros(0, np.int8), np.zeros((0, 4), np.float32), np.array([])
    )
    assert teacher_spider_prob(teachers, empty, threads=1).shape == (0,)
    with pytest.raises(ValueError, match="no teacher"):
        teacher_spider_prob([], empty)


def test_class_loss_blends_label_and_teacher_cross_entropy() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [0.5, 0.5]])
    labels = torch.tensor([1, 0, 1])
    hard = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(class_loss(logits, labels), hard)
    soft = torch.tensor([0.9, 0.2, 0.5])
    assert torch.allclose(class_loss(logits, labels, soft, 0.0), hard)  # weight 0: labels only
    assert torch.allclose(class_loss(logits, labels, labels.float(), 0.7), hard)  # targets equal to the labels
    q1 = torch.softmax(logits, 1)[:, 1]
    soft_ce = -(soft * q1.log() + (1 - soft) * (1 - q1).log()).mean()
    assert torch.allclose(class_loss(logits, labels, soft, 0.25), 0.75 * hard + 0.25 * soft_ce, atol=1e-6)
    # with weight 1 the loss is smallest where the model says what the teachers said
    x = torch.zeros(1, 2, requires_grad=True)
    opt = torch.optim.SGD([x], lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        class_loss(x, torch.tensor([1]), torch.tensor([0.3]), 1.0).backward()
        opt.step()
    assert float(torch.softmax(x.detach(), 1)[0, 1]) == pytest.approx(0.3, abs=1e-3)


def test_trainer_uses_the_soft_targets_and_refuses_a_half_configuration() -> None:
    data = _tiny_tiles(8, seed=9)
    settings = TrainSettings(width=16, epochs=1, batch=4, steps_per_epoch=2, val_frac=0.25, batch_norm=False)
    with pytest.raises(ValueError, match="soft targets and a distill weight"):
        Trainer(settings).fit(data, soft_targets=np.full(8, 0.5, np.float32))
    with pytest.raises(ValueError, match="soft targets and a distill weight"):
        Trainer(TrainSettings(width=16, distill=0.5)).fit(data)
    with pytest.raises(ValueError, match="do not match"):
        Trainer(TrainSettings(width=16, distill=0.5)).fit(data, soft_targets=np.full(7, 0.5, np.float32))
    seen: list[torch.Tensor] = []
    trainer = Trainer(TrainSettings(width=16, epochs=1, batch=4, steps_per_epoch=2, val_frac=0.25, distill=0.5))
    real_loss = trainer._loss

    def spy(x: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, soft: torch.Tensor | None = None):  # type: ignore[no-untyped-def]
        assert soft is not None
        seen.append(soft.clone())
        return real_loss(x, labels, boxes, soft)

    trainer._loss = spy  # type: ignore[method-assign]
    targets = np.linspace(0.05, 0.95, 8).astype(np.float32)  # one distinct value per tile
    result = trainer.fit(data, soft_targets=targets)
    assert len(result.history) == 1 and len(seen) == 2
    assert all(float(v) in set(targets.tolist()) for batch in seen for v in batch)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--teacher", "missing.onnx"], "--teacher missing.onnx: no such model file"),
        (["--teacher", "T", "--distill", "1.5"], "--distill must lie in (0, 1]"),
        (["--teacher", "T", "--distill", "0"], "--distill must lie in (0, 1]"),
        (["--teacher-hflip"], "--teacher-hflip needs --teacher"),
        (["--distill", "0.5"], "--distill needs --teacher"),
    ],
)
def test_train_cli_bad_distillation_options_are_one_line(
    tmp_path: Path, teachers: list[Path], extra: list[str], message: str
) -> None:
    save_tile_set(_tiny_tiles(4, seed=3), tmp_path / "tiles", {"seed": 3})
    extra = [str(teachers[0]) if a == "T" else a for a in extra]
    proc = _train_cli("--tiles", str(tmp_path / "tiles"), "--out", str(tmp_path / "m.onnx"), *extra)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_train_cli_distils_and_says_so_in_the_card(tmp_path: Path, teachers: list[Path]) -> None:
    save_tile_set(_tiny_tiles(8, seed=4), tmp_path / "tiles", {"seed": 4})
    out = tmp_path / "m.onnx"
    proc = _train_cli(
        "--tiles", str(tmp_path / "tiles"), "--out", str(out), "--width", "16", "--epochs", "1", "--batch", "4",
        "--steps-per-epoch", "1", "--val-frac", "0.25", "--teacher", *map(str, teachers), "--distill", "0.6",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "teachers: 2 model(s) on 8 tiles" in proc.stdout and "teachers agree with the labels on" in proc.stdout
    card = out.with_suffix(".md").read_text()
    assert "on the labels ×0.4 and on the teachers' mean spider probability ×0.6" in card
    assert str(teachers[0]) in card and '"distill": 0.6' in card
