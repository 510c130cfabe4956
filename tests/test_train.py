"""Training: augmentation geometry, location targets, Eq. 1 in torch, a one-epoch smoke run, the CLI."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from inspector.fam import tile_fam  # noqa: E402
from inspector.synth.tiles import TileSet, save_tile_set  # noqa: E402
from inspector.training.metrics import TileFigures  # noqa: E402
from inspector.training.train import (  # noqa: E402
    Trainer,
    TrainSettings,
    _box_mask,
    _cells_target,
    augment,
    eq1_map,
    fam_layer_scale,
)


def _tiny_tiles(n: int = 12, seed: int = 0) -> TileSet:
    """Noisy green tiles; spider tiles carry a dark 8-legged blob in a known box."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 140, (n, 224, 224, 3)).astype(np.uint8)
    images[..., 1] = np.clip(images[..., 1].astype(int) + 60, 0, 255).astype(np.uint8)
    labels = np.zeros(n, np.int8)
    boxes = np.full((n, 4), -1, np.float32)
    kinds = np.array(["neg"] * n)
    for i in range(0, n, 2):
        x, y = rng.integers(20, 170, 2)
        images[i, y + 8 : y + 24, x + 8 : x + 24] = 15
        for k in range(8):
            ang = k * np.pi / 4
            ex, ey = int(x + 16 + 15 * np.cos(ang)), int(y + 16 + 15 * np.sin(ang))
            images[i, min(ey, y + 16) : max(ey, y + 16) + 2, min(ex, x + 16) : max(ex, x + 16) + 2] = 15
        labels[i], boxes[i], kinds[i] = 1, (x, y, x + 32, y + 32), "pos"
    return TileSet(images, labels, boxes, kinds, {"source": "test"})


def test_augment_moves_boxes_with_the_pixels() -> None:
    img = np.zeros((8, 224, 224, 3), np.uint8)
    boxes = np.zeros((8, 4), np.float32)
    for i in range(8):
        x, y = 20 + 10 * i, 150 - 12 * i
        img[i, y : y + 10, x : x + 30] = 255
        boxes[i] = (x, y, x + 30, y + 10)
    boxes[7] = -1
    gen = torch.Generator().manual_seed(1)
    out, new_boxes = augment(torch.from_numpy(img), torch.from_numpy(boxes), gen)
    for i in range(7):
        bright = out[i].mean(dim=-1) > 150
        ys, xs = np.nonzero(bright.numpy())
        x1, y1, x2, y2 = new_boxes[i].tolist()
        assert xs.min() >= x1 - 1 and xs.max() + 1 <= x2 + 1
        assert ys.min() >= y1 - 1 and ys.max() + 1 <= y2 + 1
    assert new_boxes[7].tolist() == [-1, -1, -1, -1]


def test_augment_jitter_scales_the_colour_part_only() -> None:
    rng = np.random.default_rng(4)
    img = torch.from_numpy(rng.integers(30, 220, (6, 224, 224, 3), dtype=np.uint8))
    boxes = torch.tensor([[10.0, 20.0, 40.0, 60.0]] * 5 + [[-1.0] * 4])
    plain, plain_boxes = augment(img, boxes, torch.Generator().manual_seed(3), jitter=0.0)
    full, full_boxes = augment(img, boxes, torch.Generator().manual_seed(3), jitter=1.0)
    half, _ = augment(img, boxes, torch.Generator().manual_seed(3), jitter=0.5)
    assert torch.equal(plain_boxes, full_boxes)  # the same seed gives the same flips and turns at any jitter
    # jitter 0: every output tile is the input tile flipped/turned, pixel for pixel
    for i in range(6):
        views = [img[i].float()]
        views += [v.flip(1) for v in views]
        views = [v.rot90(k, (0, 1)) for v in views for k in range(4)]
        assert any(torch.equal(plain[i], v) for v in views)
    dev_full = (full - plain).abs().mean().item()
    dev_half = (half - plain).abs().mean().item()
    assert 0 < dev_half < dev_full


def test_augment_depth_of_field_blurs_the_share_asked_and_keeps_the_geometry() -> None:
    rng = np.random.default_rng(4)
    img = torch.from_numpy(rng.integers(30, 220, (16, 224, 224, 3), dtype=np.uint8))
    boxes = torch.tensor([[10.0, 20.0, 40.0, 60.0]] * 16)
    plain, plain_boxes = augment(img, boxes, torch.Generator().manual_seed(3), jitter=0.0)
    again, _ = augment(img, boxes, torch.Generator().manual_seed(3), jitter=0.0, depth_of_field=0.0)
    assert torch.equal(plain, again)  # share 0 draws nothing extra: old seeds give the old tiles
    blurred, blurred_boxes = augment(img, boxes, torch.Generator().manual_seed(3), jitter=0.0, depth_of_field=1.0)
    assert torch.equal(blurred_boxes, plain_boxes)  # the same flips and turns at any share
    for i in range(16):  # every tile blurred somewhere, none sharpened: random pixels lose contrast
        assert blurred[i].std() < plain[i].std()
        assert (blurred[i] - plain[i]).abs().mean() > 1.0
    some, _ = augment(img, boxes, torch.Generator().manual_seed(3), jitter=0.0, depth_of_field=0.5)
    changed = sum(not torch.equal(some[i], plain[i]) for i in range(16))
    assert 0 < changed < 16


def test_location_targets() -> None:
    boxes = torch.tensor([[16.0, 32.0, 48.0, 40.0], [-1, -1, -1, -1]])
    t = _cells_target(boxes, torch.tensor([1, 0]), 14)  # 16 px cells
    # x 16..48 -> columns 1 and 2; y 32..40 -> row 2 only
    assert t[0].sum() == 2
    assert t[0, 2, 1] == 1 and t[0, 2, 2] == 1
    assert t[1].sum() == 0
    m = _box_mask(torch.tensor([[0.0, 0.0, 224.0, 112.0]]), 56)
    assert m.sum() == 56 * 28


def test_eq1_in_torch_matches_inspector_fam() -> None:
    rng = np.random.default_rng(0)
    fams = [rng.random((2, 224 >> k, 224 >> k)).astype(np.float32) for k in range(1, 6)]
    ours = eq1_map([torch.from_numpy(f) for f in fams], 224).numpy()
    np.testing.assert_allclose(ours, tile_fam(fams, 224, "paper"), rtol=1e-4, atol=1e-4)


def test_one_epoch_smoke_and_export(tmp_path: Path) -> None:
    data = _tiny_tiles()
    settings = TrainSettings(width=16, epochs=1, batch=4, steps_per_epoch=2, val_frac=0.25, seed=0)
    trainer = Trainer(settings)
    before = trainer.model.features[0].weight.detach().clone()
    result = trainer.fit(data)
    assert len(result.history) == 1 and result.best_epoch == 1
    assert result.n_val == 4 and result.n_train == 8
    assert not torch.equal(before, trainer.model.features[0].weight)  # it trained
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in result.model.modules())  # folded
    v = result.history[0].val
    assert 0.0 <= v.accuracy <= 1.0 and 0.0 <= v.pointing <= 1.0
    scales = fam_layer_scale(result.model, data.images[data.labels == 0])
    assert len(scales) == 5 and min(scales) > 0


def test_separate_selection_set_chooses_the_epoch_and_is_never_trained_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspector.training.train as train_mod

    data, val_data = _tiny_tiles(12, seed=5), _tiny_tiles(6, seed=6)
    val_data.images[:, 0, 0] = (1, 2, 3)  # a mark no training tile carries (they lie in 60..200)
    batches: list[torch.Tensor] = []
    real_augment = train_mod.augment

    def spy(
        images: torch.Tensor, boxes: torch.Tensor, gen: torch.Generator, jitter: float = 1.0, dof: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batches.append(images.clone())  # before augmentation moves the corner
        return real_augment(images, boxes, gen, jitter, dof)

    monkeypatch.setattr(train_mod, "augment", spy)
    trainer = Trainer(TrainSettings(width=16, epochs=2, batch=4, steps_per_epoch=2, seed=0, batch_norm=False))
    result = trainer.fit(data, val_data=val_data)
    assert result.n_train == 12 and result.n_val == 6 and result.val_source.startswith("separate")
    marked = [bool((b[:, 0, 0] == torch.tensor([1, 2, 3], dtype=torch.uint8)).all(dim=1).any()) for b in batches]
    assert len(batches) == 4 and not any(marked)
    again = trainer.evaluate(val_data, np.arange(6), result.model)  # the recorded figures are val_data's
    best = next(e for e in result.history if e.epoch == result.best_epoch)
    assert again.accuracy == pytest.approx(best.val.accuracy)


def test_train_cli_writes_model_manifest_and_card(tmp_path: Path) -> None:
    save_tile_set(_tiny_tiles(8, seed=1), tmp_path / "tiles", {"seed": 1, "split": "fit"})
    save_tile_set(_tiny_tiles(4, seed=2), tmp_path / "val", {"seed": 2, "split": "val"})
    out = tmp_path / "m.onnx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "train",
            "--tiles",
            str(tmp_path / "tiles"),
            "--out",
            str(out),
            "--width",
            "16",
            "--epochs",
            "1",
            "--batch",
            "4",
            "--steps-per-epoch",
            "1",
            "--val-tiles",
            str(tmp_path / "val"),
            "--report-tiles",
            f"same={tmp_path / 'tiles'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert manifest["model_card"] == "m.md" and manifest["width"] == 16
    assert len(manifest["fam_layer_scale"]) == 5 and min(manifest["fam_layer_scale"]) > 0
    card = out.with_suffix(".md").read_text()
    assert "Data licences" in card and "Validation (separate selection tile sets" in card and "CAM (paper)" in card
    assert "8 training / 4 validation tiles" in card and "(selection only)" in card
    assert "(chosen by accuracy + half the pointing share)" in card and "ROC AUC" in card  # --select's default
    assert "jitter and sensor noise; class-balanced" in card  # default jitter 1, said without a factor
    assert "## Shortcut probes" in card and "sharp-patch probe" in card and "| blurred spider σ 3 |" in card
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "fam1", "fam2", "fam3", "fam4", "fam5"]


def _train_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inspector", "train", *args], capture_output=True, text=True, check=False
    )


def test_train_cli_widens_a_narrower_start_block_by_block(tmp_path: Path) -> None:
    from inspector.training.export import export_model
    from inspector.training.vgg import VGG16

    save_tile_set(_tiny_tiles(8, seed=2), tmp_path / "tiles", {"seed": 2, "split": "train"})
    export_model(VGG16(width=16).eval(), tmp_path / "narrow.onnx", name="narrow")
    out = tmp_path / "wide.onnx"
    proc = _train_cli(
        "--tiles", str(tmp_path / "tiles"), "--out", str(out), "--width", "16,16,16,8,8",
        "--weights", str(tmp_path / "narrow.onnx"), "--no-batch-norm", "--dropout", "0.1", "--fam-loss", "0",
        "--epochs", "1", "--batch", "4", "--steps-per-epoch", "1", "--val-frac", "0.25",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "width ÷16,16,16,8,8" in proc.stdout
    assert yaml.safe_load(out.with_suffix(".yaml").read_text())["width"] == [16, 16, 16, 8, 8]
    card = out.with_suffix(".md").read_text()
    assert "widened to width 16,16,16,8,8" in card and '"dropout": 0.1' in card and "width ÷16,16,16,8,8" in card


def test_train_cli_hidden_and_fp16_weights(tmp_path: Path) -> None:
    import onnx

    save_tile_set(_tiny_tiles(8, seed=2), tmp_path / "tiles", {"seed": 2, "split": "train"})
    out = tmp_path / "m.onnx"
    common = ["--tiles", str(tmp_path / "tiles"), "--width", "16", "--epochs", "1", "--batch", "4"]
    proc = _train_cli(
        *common, "--out", str(out), "--hidden", "24", "--steps-per-epoch", "1", "--val-frac", "0.25", "--fp16-weights"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    initializers = onnx.load(str(out)).graph.initializer
    largest = max(initializers, key=lambda t: int(np.prod(t.dims)))
    assert largest.data_type == onnx.TensorProto.FLOAT16  # --fp16-weights
    shapes = sorted(tuple(t.dims) for t in initializers if len(t.dims) == 2)
    assert shapes == [(2, 24), (24, 24), (24, 512 // 16 * 49)]  # default_hidden(16) would be 128
    bad = _train_cli(*common, "--out", str(tmp_path / "b.onnx"), "--hidden", "0")
    assert bad.returncode == 1 and "--hidden" in bad.stderr and bad.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("bad", ["3", "8,8,8", "wide"])
def test_train_cli_bad_width_is_one_line(tmp_path: Path, bad: str) -> None:
    save_tile_set(_tiny_tiles(4, seed=3), tmp_path / "tiles", {"seed": 3})
    proc = _train_cli("--tiles", str(tmp_path / "tiles"), "--out", str(tmp_path / "m.onnx"), "--width", bad)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "--width" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("batch_norm", [True, False])
def test_weight_average_is_validated_and_kept_only_when_no_worse(batch_norm: bool) -> None:
    data = _tiny_tiles(16, seed=4)
    settings = TrainSettings(
        width=16, epochs=3, batch=4, steps_per_epoch=4, val_frac=0.25, batch_norm=batch_norm, average_from=0.0
    )
    trainer = Trainer(settings)
    result = trainer.fit(data)
    a = result.averaged
    assert a is not None and a.from_epoch == 1
    assert a.snapshots == 12  # every step (steps // 4 = 1) of the three epochs
    best = next(e for e in result.history if e.epoch == result.best_epoch)
    from inspector.training.train import selection_score

    assert a.kept == (selection_score(a.val) >= selection_score(best.val))
    # what was kept is what comes out: re-validating the result reproduces the recorded figures
    from inspector.training.train import split_train_val

    _, va = split_train_val(data.labels, settings.val_frac, np.random.default_rng(settings.seed))  # fit's first draw
    again = trainer.evaluate(data, va, result.model)
    assert again.accuracy == pytest.approx((a.val if a.kept else best.val).accuracy)


@pytest.mark.parametrize(("average_from", "recycle_calls"), [(None, 3), (0.0, 1)])
def test_recycling_pauses_once_averaging_starts(
    monkeypatch: pytest.MonkeyPatch, average_from: float | None, recycle_calls: int
) -> None:
    import inspector.training.train as train_mod

    calls: list[int] = []
    real = train_mod.recycle_dead_units

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "recycle_dead_units", counting)
    settings = TrainSettings(width=16, epochs=3, batch=4, steps_per_epoch=2, val_frac=0.25, average_from=average_from)
    result = Trainer(settings).fit(_tiny_tiles(8, seed=5))
    assert len(calls) == recycle_calls  # re-drawn units would spoil an average under way
    assert (result.averaged is None) == (average_from is None)


def test_best_weights_checkpoint_resumes_through_weights(tmp_path: Path) -> None:
    from inspector.training.vgg import VGG16, load_weights

    ckpt = tmp_path / "m.best.pt"
    settings = TrainSettings(
        width=16, epochs=2, batch=4, steps_per_epoch=2, val_frac=0.25, batch_norm=False, checkpoint=ckpt
    )
    result = Trainer(settings).fit(_tiny_tiles(8, seed=6))
    assert ckpt.is_file() and not ckpt.with_name(ckpt.name + ".tmp").exists()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == result.best_epoch
    fresh = VGG16(width=16, batch_norm=False)
    assert "tensors from m.best.pt" in load_weights(fresh, ckpt)
    for (k, v), (k2, v2) in zip(fresh.state_dict().items(), result.model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_request_stop_ends_the_run_after_the_current_step_with_a_model() -> None:
    trainer = Trainer(TrainSettings(width=16, epochs=50, batch=4, steps_per_epoch=20, val_frac=0.25))
    trainer.request_stop("stopped by SIGTERM")
    result = trainer.fit(_tiny_tiles(8, seed=7))
    assert len(result.history) == 1 and result.best_epoch == 1
    assert result.stopped == "stopped by SIGTERM in epoch 1"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in result.model.modules())


def test_train_cli_sigterm_exports_the_best_so_far_and_removes_the_checkpoint(tmp_path: Path) -> None:
    import signal

    save_tile_set(_tiny_tiles(8, seed=8), tmp_path / "tiles", {"seed": 8, "split": "train"})
    out = tmp_path / "m.onnx"
    args = ["--tiles", str(tmp_path / "tiles"), "--out", str(out), "--width", "16", "--epochs", "100000",
            "--patience", "100000", "--batch", "4", "--steps-per-epoch", "1", "--val-frac", "0.25"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until an epoch is done, so there is a best
        if line.startswith("epoch 2:"):
            break
    assert (tmp_path / "m.best.pt").is_file()  # while it runs, the best so far is on disk
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: stopping after this step" in err and "Traceback" not in err
    assert "stopped by SIGTERM" in rest and out.is_file() and out.with_suffix(".md").is_file()
    assert not (tmp_path / "m.best.pt").exists()
    assert "stopped by SIGTERM in epoch" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    ("option", "bad"),
    [("--jitter", v) for v in ("-0.5", "2.5", "nan")]
    + [("--average-from", v) for v in ("1", "-0.1", "1.5")]
    + [("--device", "tpu")],
)
def test_train_cli_bad_options_are_one_line(tmp_path: Path, option: str, bad: str) -> None:
    save_tile_set(_tiny_tiles(4, seed=3), tmp_path / "tiles", {"seed": 3})
    proc = _train_cli("--tiles", str(tmp_path / "tiles"), "--out", str(tmp_path / "m.onnx"), option, bad)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and option in proc.stderr


@pytest.mark.parametrize("has_cuda", [False, True])
def test_device_auto_follows_the_gpu_and_cuda_without_one_is_one_line(
    monkeypatch: pytest.MonkeyPatch, has_cuda: bool
) -> None:
    import torch

    from inspector.training.train import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if has_cuda else 0)
    assert resolve_device("auto") == ("cuda" if has_cuda else "cpu")
    assert resolve_device("cpu") == "cpu"
    if has_cuda:
        assert resolve_device("cuda:1") == "cuda:1"
        with pytest.raises(ValueError, match=r"GPUs 0\.\.1"):
            resolve_device("cuda:2")  # an index the machine lacks is one line, not a traceback at model.to()
    else:
        with pytest.raises(ValueError, match="no CUDA GPU") as exc:
            resolve_device("cuda")
        assert "\n" not in str(exc.value) and "--device cpu" in str(exc.value)
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu")


def test_lr_schedule_warms_up_peaks_and_anneals_even_when_cut_by_the_clock() -> None:
    from inspector.training.train import lr_at

    assert lr_at(0.0, 1e-3) == pytest.approx(2e-5)
    assert lr_at(0.1, 1e-3) == pytest.approx(1e-3)
    assert lr_at(1.0, 1e-3) == pytest.approx(2e-5)
    assert lr_at(5.0, 1e-3) == pytest.approx(2e-5)  # past the budget: stays at the floor
    after_peak = [lr_at(p / 100, 1e-3) for p in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(after_peak))


@pytest.mark.parametrize(
    ("meta", "expect"),
    [
        ({}, "{}"),
        ({"mode": "real", "split": "train", "seed": 3}, "real (train photos); seed 3"),
        ({"mode": "real", "split": "fit", "background_patches": 0.0}, "real (fit photos)"),
        (
            {"mode": "real", "split": "fit", "background_patches": 0.4, "seed": 41},
            "real (fit photos); 40% of non-spider patches from spider-photo backgrounds; seed 41",
        ),
        (
            {"mode": "real", "split": "fit", "patches_per_seed": True, "seed": 51},
            "real (fit photos); non-spider patches drawn per seed; seed 51",
        ),
        (
            {"mode": "procedural", "counts": {"pos": 2, "neg": 1}, "scales": [{"tile_px": 140}, {"tile_px": 306}]},
            "procedural; 3 tiles (pos 2, neg 1); tiles cut at 140/306 px",
        ),
        (
            {"source": "mined", "n_candidates": 20, "model": "j.onnx", "counts": {"neg": 3, "pos": 2}},
            "mined; the hardest of 20 candidate tiles as scored by j.onnx; 5 tiles (neg 3, pos 2)",
        ),
    ],
)
def test_card_describes_tile_sets_in_one_line(meta: dict[str, object], expect: str) -> None:
    from inspector.training.card import describe_tile_set

    assert describe_tile_set(meta) == expect


@pytest.mark.parametrize(
    ("jitter", "expect"),
    [
        (0.0, "horizontal flips, 90° rotations (no colour jitter or noise)"),
        (0.5, "horizontal flips, 90° rotations, brightness/contrast/saturation jitter and sensor noise ×0.5"),
        (1.0, "horizontal flips, 90° rotations, brightness/contrast/saturation jitter and sensor noise"),
    ],
)
def test_card_states_the_augmentation_as_trained(jitter: float, expect: str) -> None:
    from inspector.training.card import _augmentation_text

    assert _augmentation_text(jitter) == expect
    assert _augmentation_text(jitter, 0.5).startswith("horizontal flips, 90° rotations, a random depth of field on 50 %")


def _figures(accuracy: float, auc: float, pointing: float) -> TileFigures:
    return TileFigures(100, 50, accuracy, 0.9, 0.9, auc, 0.5, 0.01, pointing, 0.5)


def test_selection_by_auc_counts_pointing_only_up_to_the_target() -> None:
    from inspector.training.train import SELECT_BY, selection_score

    early = _figures(accuracy=0.943, auc=0.982, pointing=0.987)  # a fine-tune's first epoch
    later = _figures(accuracy=0.938, auc=0.984, pointing=0.984)  # thirty epochs on: ranks better, maps as good
    assert selection_score(early, "accuracy") > selection_score(later, "accuracy")
    assert selection_score(later, "auc") > selection_score(early, "auc")
    # below the pointing target the maps still count in full
    blind = _figures(accuracy=0.95, auc=0.990, pointing=0.60)
    assert selection_score(later, "auc") > selection_score(blind, "auc")
    nan = _figures(accuracy=float("nan"), auc=float("nan"), pointing=float("nan"))
    assert selection_score(nan, "auc") == 0.0 and selection_score(nan) == 0.0
    assert SELECT_BY == ("accuracy", "auc")
    with pytest.raises(ValueError, match="select by 'loss'"):
        selection_score(early, "loss")


def test_train_cli_select_choices_are_the_trainers() -> None:
    import argparse

    from inspector.commands.train import add_arguments
    from inspector.training.train import SELECT_BY

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert tuple(next(a.choices for a in parser._actions if a.dest == "select")) == SELECT_BY
    assert parser.parse_args(["--tiles", "t", "--out", "m.onnx"]).select == "accuracy"  # default: as before


def test_trainer_refuses_an_unknown_selection_before_training() -> None:
    with pytest.raises(ValueError, match="select by 'loss'"):
        Trainer(TrainSettings(width=16, select="loss"))
    from inspector.training.train import SELECTION_RULES

    assert SELECTION_RULES["auc"].endswith("up to 85 %")  # the card's words follow POINTING_TARGET
