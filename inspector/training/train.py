"""Fine-tuning loop for the inspector's VGG16 on tile sets (format: :mod:`inspector.synth.tiles`).

All layers train (as in the seed paper), with flips, 90° rotations, depth of field, colour jitter and noise, class-balanced
sampling, a validation split and early stopping. Two location signals help the small widths learn at all on a
2-core CPU (TRAINING-NOTES.md: class loss alone did not get going from scratch):

- a training-only 1x1-conv *objectness* head on pool4 (14x14 cells; target: cells the spider box touches);
- a *FAM mass* loss: on spider tiles, minus the log of the share of the paper's Eq. 1 map (computed at 56x56)
  that lies inside the spider box — it trains exactly what the pointing game measures.

Neither survives export: the head lives outside :class:`VGG16` and the loss is only a loss.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from inspector.progress import progress as progress_bar
from inspector.synth.camera import depth_of_field
from inspector.synth.tiles import TileSet
from inspector.training.dormant import recycle_dead_units
from inspector.training.metrics import TileFigures, tile_figures
from inspector.training.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_SIZE,
    VGG16,
    Width,
    fold_batchnorm,
    load_weights,
)

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    width: Width = 8  # one divisor, or five (one per block)
    hidden: int | None = None  # classifier hidden size (None: vgg.default_hidden(width))
    epochs: int = 12
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_frac: float = 0.1
    patience: int = 4
    max_minutes: float = 30.0
    seed: int = 0
    threads: int = 2
    weights: Path | None = None
    batch_norm: bool = True
    aux_objectness: float = 1.0  # weight of the pool4 objectness loss (0: off)
    aux_fam_mass: float = 0.5  # weight of the FAM mass loss (0: off)
    dropout: float = 0.5  # classifier dropout (VGG16's 0.5; lower when the small widths underfit)
    recycle_dead: bool = True  # re-draw dead ReLU units before every epoch (inspector.training.dormant)
    steps_per_epoch: int | None = None  # default: one pass over the training split
    jitter: float = 1.0  # scale of augment()'s colour jitter and noise (0: flips and turns only)
    depth_of_field: float = 0.0  # share of training tiles seen with a random depth-of-field blur (augment())
    average_from: float | None = None  # average the weights (SWA) from this share of the run on (None: off)
    distill: float = 0.0  # weight of the teachers' soft targets in the class loss (0: labels only; needs soft targets)
    teachers: tuple[str, ...] = ()  # where the soft targets came from (for the model card)
    checkpoint: Path | None = None  # the best epoch's weights are saved here whenever validation improves
    device: str = "cpu"  # torch device the model trains on ("cuda" on a GPU machine; see resolve_device)
    select: str = "accuracy"  # what picks the best epoch on validation: "accuracy" or "auc" (see selection_score)
    weights_note: str = ""


@dataclass
class EpochLog:
    epoch: int
    seconds: float
    train_loss: float
    val: TileFigures


@dataclass
class TrainResult:
    model: VGG16  # best epoch, BN folded, eval mode
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    n_train: int = 0
    n_val: int = 0
    val_source: str = "split of the training tile sets"  # where the tiles that chose the best epoch came from
    stopped: str = ""
    recycled: dict[str, int] = field(default_factory=dict)  # dead units re-drawn per layer, summed over epochs
    averaged: AveragedWeights | None = None  # the SWA average, when settings.average_from is set


@dataclass
class AveragedWeights:
    snapshots: int  # weight snapshots in the average
    from_epoch: int  # first epoch that contributed
    val: TileFigures  # the average's figures on the validation split
    kept: bool  # True when it validated at least as well as the best epoch and is the result


def to_input(images_bgr: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 224, 224, 3) BGR -> float (N, 3, 224, 224) RGB normalised as in the manifest."""
    x = images_bgr.flip(-1).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(
    images: torch.Tensor,
    boxes: torch.Tensor,
    gen: torch.Generator,
    jitter: float = 1.0,
    depth_of_field: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, 90° rotations, depth of field, brightness/contrast/saturation jitter and noise on uint8 BGR tiles.

    ``boxes`` (N, 4) xyxy (negative = none) follow the geometry. ``jitter`` scales the photometric part (1: brightness
    and contrast ±25 %, saturation ±30 %, noise sigma up to 6; 0: geometry only); the same random numbers are drawn
    whatever its value, so a seed gives the same flips and turns. A ``depth_of_field`` share of the tiles, spider or
    not alike, first goes through :func:`inspector.synth.camera.depth_of_field` (blur sigma varying over the tile,
    up to `DOF_SIGMA_PX`), so sharpness says nothing about where a spider is. Returns float BGR in 0..255 and new boxes.
    """
    n, s = images.shape[0], images.shape[1]
    x = images.float()
    b = boxes.clone()
    has = b[:, 0] >= 0
    out = torch.empty_like(x)
    k = torch.randint(0, 4, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        img = x[i]
        bx = b[i].clone()
        if flip[i]:
            img = img.flip(1)
            bx = torch.stack([s - bx[2], bx[1], s - bx[0], bx[3]])
        for _ in range(int(k[i])):  # rotate 90° counter-clockwise: (x, y) -> (y, s - x)
            img = img.rot90(1, (0, 1))
            bx = torch.stack([bx[1], s - bx[2], bx[3], s - bx[0]])
        out[i] = img
        if has[i]:
            b[i] = bx
    if depth_of_field > 0:  # drawn after the geometry: a seed gives the same flips and turns at any share
        out = _with_depth_of_field(out, gen, depth_of_field)
    j = float(jitter)
    bright = torch.empty(n, 1, 1, 1).uniform_(1 - 0.25 * j, 1 + 0.25 * j, generator=gen)
    contrast = torch.empty(n, 1, 1, 1).uniform_(1 - 0.25 * j, 1 + 0.25 * j, generator=gen)
    sat = torch.empty(n, 1, 1, 1).uniform_(1 - 0.3 * j, 1 + 0.3 * j, generator=gen)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    gray = out.mean(dim=3, keepdim=True)
    out = (out - gray) * sat + gray
    out = out * bright
    out = out + torch.randn(out.shape, generator=gen) * torch.empty(n, 1, 1, 1).uniform_(0, 6 * j, generator=gen)
    return out.clamp_(0, 255), b


DOF_SIGMA_PX = (0.5, 3.0)  # most blur of augment()'s depth of field, drawn per tile (tile pixels)


def _with_depth_of_field(images: torch.Tensor, gen: torch.Generator, share: float) -> torch.Tensor:
    """The float 0..255 BGR tiles, a `share` of them (drawn with `gen`) seen with a random depth of field."""
    pick = (torch.rand(images.shape[0], generator=gen) < share).numpy()
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    if not pick.any():
        return images
    rng = np.random.default_rng(seed)
    out = images.clone()
    for i in np.flatnonzero(pick):
        tile = images[i].round().clamp(0, 255).to(torch.uint8).numpy()
        out[i] = torch.from_numpy(depth_of_field(tile, float(rng.uniform(*DOF_SIGMA_PX)), rng)).float()
    return out


def class_loss(
    logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None, distill: float = 0.0
) -> torch.Tensor:
    """Cross-entropy on the labels, blended with cross-entropy on the teachers' spider probabilities `soft` (N,):
    ``(1 - distill) * CE(labels) + distill * CE(soft)``. Flips, turns and the mild colour jitter of
    :func:`augment` leave a tile's class alone, so a target computed once on the plain tile holds for its
    augmented copies."""
    hard = F.cross_entropy(logits, labels.long())
    if soft is None or distill <= 0:
        return hard
    logq = F.log_softmax(logits, dim=1)
    soft_ce = -(soft * logq[:, 1] + (1 - soft) * logq[:, 0]).mean()
    return (1 - distill) * hard + distill * soft_ce


def _cells_target(boxes: torch.Tensor, labels: torch.Tensor, cells: int) -> torch.Tensor:
    """(N, cells, cells) float: 1 where a cell overlaps the spider box, 0 elsewhere and on negatives."""
    n = boxes.shape[0]
    t = torch.zeros(n, cells, cells)
    step = INPUT_SIZE / cells
    for i in range(n):
        if labels[i] != 1 or boxes[i, 0] < 0:
            continue
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        c1, c2 = int(x1 // step), min(cells - 1, math.ceil(x2 / step) - 1)
        r1, r2 = int(y1 // step), min(cells - 1, math.ceil(y2 / step) - 1)
        t[i, max(r1, 0) : r2 + 1, max(c1, 0) : c2 + 1] = 1.0
    return t


def _box_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size, size) 1 inside each box (scaled from 224 to ``size``), at least one pixel."""
    n = boxes.shape[0]
    m = torch.zeros(n, size, size)
    f = size / INPUT_SIZE
    for i in range(n):
        x1, y1, x2, y2 = (float(v) * f for v in boxes[i])
        c1, r1 = int(max(0, math.floor(x1))), int(max(0, math.floor(y1)))
        c2, r2 = int(min(size, math.ceil(x2))), int(min(size, math.ceil(y2)))
        m[i, r1 : max(r2, r1 + 1), c1 : max(c2, c1 + 1)] = 1.0
    return m


def eq1_map(fams: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Paper Eq. 1 in torch: sum over layers of bilinear-upsampled channel sums (align_corners=False)."""
    total = torch.zeros(fams[0].shape[0], size, size, device=fams[0].device)
    for f in fams:
        total = total + F.interpolate(f.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return total


@dataclass
class _FitRun:
    """The state of one :meth:`Trainer.fit`: the tiles as tensors, the split, the sampler, the clock, the best so far."""

    images: torch.Tensor  # uint8 (N, 224, 224, 3) BGR, all of the training data
    labels: torch.Tensor  # int64 (N,)
    boxes: torch.Tensor  # float32 (N, 4) xyxy
    soft: torch.Tensor | None  # float32 (N,) teachers' spider probabilities, or None
    tr: np.ndarray  # indices of the training tiles
    va: np.ndarray  # indices of the selection tiles in `val_set`
    val_set: TileSet
    sample_p: np.ndarray  # class-balanced sampling probabilities over `tr`
    steps: int  # steps per epoch
    rng: np.random.Generator
    gen: torch.Generator  # the augmentation's draws
    t0: float  # time.monotonic() at the start
    step_no: int = 0
    best_score: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    bad: int = 0  # epochs since the last gain
    swa: AveragedModel | None = None
    swa_from_epoch: int = 0

    def minutes(self) -> float:
        return (time.monotonic() - self.t0) / 60


def _soft_target_tensor(soft_targets: np.ndarray | None, data: TileSet, distill: float) -> torch.Tensor | None:
    """The teachers' targets as a tensor; ValueError unless targets and a distill weight come together and fit."""
    if (soft_targets is not None) != (distill > 0):
        raise ValueError("distillation needs both soft targets and a distill weight > 0, or neither")
    if soft_targets is None:
        return None
    if soft_targets.shape != data.labels.shape:
        raise ValueError(f"soft targets {soft_targets.shape} do not match the {len(data.labels)} tiles")
    return torch.from_numpy(soft_targets.astype(np.float32))


class Trainer:
    def __init__(self, settings: TrainSettings) -> None:
        if settings.select not in SELECTION_RULES:  # before any work, not after the first epoch
            raise ValueError(f"select by {settings.select!r}: choose one of {', '.join(SELECT_BY)}")
        self.s = settings
        torch.manual_seed(settings.seed)
        torch.set_num_threads(settings.threads)
        self.model = VGG16(
            width=settings.width, hidden=settings.hidden, batch_norm=settings.batch_norm, dropout=settings.dropout
        )
        if settings.weights is not None:
            settings.weights_note = load_weights(self.model, settings.weights)
            log.info("start weights: %s", settings.weights_note)
        self.device = torch.device(settings.device)
        self.model.to(self.device)
        self.obj_head = nn.Conv2d(self.model.block_channels[3], 1, kernel_size=1).to(self.device)
        params = list(self.model.parameters()) + list(self.obj_head.parameters())
        self.opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        self._stop_reason = ""

    def request_stop(self, reason: str = "interrupted") -> None:
        """Finish the current step, validate, and end the run with the best weights so far (signal-safe)."""
        self._stop_reason = reason

    def _loss(
        self, x: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, soft: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Training loss of a batch `x` (on the model's device). `labels` and `boxes` stay on the CPU: the
        per-box targets are built there and move once, instead of one device sync per box coordinate."""
        dev = x.device
        pools = self.model.pools(x)
        logits = self.model.head(pools[-1])
        loss = class_loss(logits, labels.to(dev), None if soft is None else soft.to(dev), self.s.distill)
        if self.s.aux_objectness > 0:
            obj = self.obj_head(pools[3])[:, 0]
            target = _cells_target(boxes, labels, obj.shape[-1]).to(dev)
            loss = loss + self.s.aux_objectness * F.binary_cross_entropy_with_logits(obj, target)
        pos = labels == 1
        if self.s.aux_fam_mass > 0 and bool(pos.any()):
            pos_dev = pos.to(dev)
            fams = [p[pos_dev].sum(dim=1) for p in pools]
            h = eq1_map(fams, 56)
            mask = _box_mask(boxes[pos], 56).to(dev)
            share = (h * mask).sum(dim=(1, 2)) / (h.sum(dim=(1, 2)) + 1e-6)
            loss = loss + self.s.aux_fam_mass * (-torch.log(share + 1e-4)).mean()
        return loss

    def fit(
        self,
        data: TileSet,
        on_epoch: Callable[[EpochLog], None] | None = None,
        val_data: TileSet | None = None,
        soft_targets: np.ndarray | None = None,
    ) -> TrainResult:
        """Train on `data`; select the best epoch on `val_data` when given (all of `data` trains), otherwise on a
        stratified ``val_frac`` split of `data`. A separate set cut from photos no training tile used keeps
        selection from rewarding the fitting of the training photos. `soft_targets` (N,): teachers' spider
        probabilities per tile of `data` (:mod:`inspector.training.distill`), weighted by ``settings.distill``."""
        s = self.s
        run = self._start(data, val_data, _soft_target_tensor(soft_targets, data, s.distill))
        result = TrainResult(model=self.model, n_train=len(run.tr), n_val=len(run.va))
        if val_data is not None:
            result.val_source = "separate selection tile sets, not trained on"
        probe = (
            to_input(run.images[torch.from_numpy(_probe_indices(data.labels, run.tr, run.rng))]).to(self.device)
            if s.recycle_dead
            else None
        )
        for epoch in range(1, s.epochs + 1):
            te = time.monotonic()
            if probe is not None and run.swa is None:  # re-drawn units would spoil an average under way
                self._recycle(probe, run.gen, result, epoch)
            losses = self._train_epoch(run, epoch)
            val = self.evaluate(run.val_set, run.va)
            ep = EpochLog(epoch, time.monotonic() - te, float(np.mean(losses)), val)
            result.history.append(ep)
            if on_epoch:
                on_epoch(ep)
            self._keep_if_best(run, ep, result)
            result.stopped = self._stop_after(run, epoch)
            if result.stopped:
                break
        else:
            result.stopped = f"all {s.epochs} epochs"
        return self._finish(run, result, data)

    def _start(self, data: TileSet, val_data: TileSet | None, soft: torch.Tensor | None) -> _FitRun:
        """The run's state: the selection split, the tiles as tensors and the class-balanced sampling weights."""
        s = self.s
        rng = np.random.default_rng(s.seed)
        # the tiles that choose the best epoch: `val_data` whole (no copy of the training tiles), or a split of `data`
        if val_data is not None:
            val_set, tr, va = val_data, np.arange(len(data.labels)), np.arange(len(val_data.labels))
        else:
            val_set, (tr, va) = data, split_train_val(data.labels, s.val_frac, rng)
        tr_labels = data.labels[tr].astype(np.int64)
        counts = np.bincount(tr_labels, minlength=2).astype(np.float64)
        sample_p = 1.0 / np.maximum(counts[tr_labels], 1.0)
        steps = s.steps_per_epoch or max(1, len(tr) // s.batch)
        return _FitRun(
            images=torch.from_numpy(data.images),
            labels=torch.from_numpy(data.labels.astype(np.int64)),
            boxes=torch.from_numpy(data.boxes_xyxy.astype(np.float32)),
            soft=soft,
            tr=tr,
            va=va,
            val_set=val_set,
            sample_p=sample_p / sample_p.sum(),
            steps=steps,
            rng=rng,
            gen=torch.Generator().manual_seed(s.seed),
            t0=time.monotonic(),
        )

    def _recycle(self, probe: torch.Tensor, gen: torch.Generator, result: TrainResult, epoch: int) -> None:
        """Re-draw the dead ReLU units found on `probe`, counted into `result.recycled`."""
        recycled = recycle_dead_units(self.model, probe, gen, self.opt)
        for k, v in recycled.items():
            result.recycled[k] = result.recycled.get(k, 0) + v
        if recycled:
            log.info("epoch %d: re-drew dead units %s", epoch, recycled)

    def _train_epoch(self, run: _FitRun, epoch: int) -> list[float]:
        """One epoch of `run.steps` class-balanced, augmented batches (fewer when time is up or a stop is asked);
        the loss of each step."""
        s = self.s
        self.model.train()
        self.obj_head.train()
        losses = []
        total_steps = run.steps * s.epochs
        for _ in progress_bar(range(run.steps), desc=f"epoch {epoch}", unit="batch", leave=False):
            bi = torch.from_numpy(run.rng.choice(run.tr, size=min(s.batch, len(run.tr)), replace=True, p=run.sample_p))
            imgs, bxs = augment(run.images[bi], run.boxes[bi], run.gen, s.jitter, s.depth_of_field)
            # augmentation stays on the CPU (its generator fixes the draws); the batch then moves to the device
            x = to_input_float(imgs).to(self.device)
            loss = self._loss(x, run.labels[bi], bxs, None if run.soft is None else run.soft[bi])
            progress = max(run.step_no / total_steps, run.minutes() / s.max_minutes)
            for group in self.opt.param_groups:
                group["lr"] = lr_at(progress, s.lr)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            run.step_no += 1
            losses.append(float(loss.detach()))
            if s.average_from is not None and progress >= s.average_from:
                self._average_step(run, epoch)
            if run.minutes() > s.max_minutes or self._stop_reason:
                break
        return losses

    def _average_step(self, run: _FitRun, epoch: int) -> None:
        """Add the weights to the running average (SWA) four times an epoch, starting the average at the first."""
        if run.step_no % max(1, run.steps // 4) != 0:
            return
        if run.swa is None:
            run.swa, run.swa_from_epoch = AveragedModel(self.model), epoch
            log.info("epoch %d: weight averaging starts", epoch)
        run.swa.update_parameters(self.model)

    def _keep_if_best(self, run: _FitRun, ep: EpochLog, result: TrainResult) -> None:
        """Keep (and checkpoint) the weights when the epoch validates best so far; count the epochs without gain."""
        score = selection_score(ep.val, self.s.select)
        if score <= run.best_score:
            run.bad += 1
            return
        run.best_score, run.bad, result.best_epoch = score, 0, ep.epoch
        run.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if self.s.checkpoint is not None:
            save_checkpoint(self.s.checkpoint, run.best_state, ep.epoch, ep.val)

    def _stop_after(self, run: _FitRun, epoch: int) -> str:
        """Why the run ends after `epoch` ('' to go on): a stop request, no gain for `patience`, the time budget."""
        s = self.s
        if self._stop_reason:
            return f"{self._stop_reason} in epoch {epoch}"
        if run.bad >= s.patience:
            return f"early stop: no validation gain for {s.patience} epochs"
        if run.minutes() > s.max_minutes:
            return f"time budget of {s.max_minutes:g} min reached"
        return ""

    def _finish(self, run: _FitRun, result: TrainResult, data: TileSet) -> TrainResult:
        """The best weights (or the average, when it validates no worse), in eval mode on the CPU, BN folded."""
        if run.best_state is not None:
            self.model.load_state_dict(run.best_state)
        if run.swa is not None:
            result.averaged = self._finish_average(
                run.swa, run.swa_from_epoch, run.best_score, data, run.tr, run.val_set, run.va
            )
            if result.averaged.kept:
                self.model.load_state_dict(run.swa.module.state_dict())
        self.model.eval()
        self.model.cpu()  # export, fam_layer_scale and the card work on the CPU whatever trained
        result.model = fold_batchnorm(self.model) if self.model.batch_norm else self.model
        result.seconds = time.monotonic() - run.t0
        return result

    def _finish_average(
        self,
        swa: AveragedModel,
        from_epoch: int,
        best_score: float,
        data: TileSet,
        tr: np.ndarray,
        val_set: TileSet,
        va: np.ndarray,
    ) -> AveragedWeights:
        """Validate the weight average on `val_set[va]` (BatchNorm statistics recomputed first on `data[tr]`); keep
        it if it is no worse."""
        avg = swa.module
        assert isinstance(avg, VGG16)
        if avg.batch_norm:
            sample = np.random.default_rng(self.s.seed).permutation(tr)[: 64 * self.s.batch]
            loader = [
                to_input(torch.from_numpy(data.images[sample[i : i + self.s.batch]]))
                for i in range(0, len(sample), self.s.batch)
            ]
            update_bn(loader, avg, device=self.device)
        val = self.evaluate(val_set, va, model=avg)
        kept = selection_score(val, self.s.select) >= best_score
        log.info(
            "weight average of %d snapshots: val accuracy %.3f (%s)",
            int(swa.n_averaged),
            val.accuracy,
            "kept" if kept else "best epoch kept",
        )
        return AveragedWeights(int(swa.n_averaged), from_epoch, val, kept)

    @torch.no_grad()
    def predict(
        self, images_bgr: np.ndarray, batch: int = 64, model: VGG16 | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Spider probabilities and fam1..fam5 for uint8 BGR tiles, in eval mode."""
        net = model if model is not None else self.model
        net.eval()
        dev = next(net.parameters()).device
        probs, fams = [], []
        for i in range(0, len(images_bgr), batch):
            x = to_input(torch.from_numpy(images_bgr[i : i + batch])).to(dev)
            out = net(x)
            probs.append(torch.softmax(out[0], dim=1)[:, 1].cpu().numpy())
            fams.append([f.cpu().numpy() for f in out[1:6]])
        return np.concatenate(probs), [np.concatenate([f[j] for f in fams]) for j in range(5)]

    def evaluate(self, data: TileSet, idx: np.ndarray, model: VGG16 | None = None) -> TileFigures:
        probs, fams = self.predict(data.images[idx], model=model)
        labels = data.labels[idx]
        pos = labels == 1
        maps = eq1_map([torch.from_numpy(f[pos]) for f in fams], INPUT_SIZE).numpy() if pos.any() else None
        return tile_figures(probs, labels, maps, data.boxes_xyxy[idx][pos])


def resolve_device(name: str) -> str:
    """The torch device for ``--device``: "auto" is "cuda" where this torch sees a GPU, else "cpu".

    Raises ValueError (one line) for "cuda" without a usable GPU or an unknown name."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"no CUDA GPU visible to torch {torch.__version__} ({build}); use --device cpu")
        index = name.partition(":")[2] or "0"
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ValueError(f"{name!r}: this machine has CUDA GPUs 0..{torch.cuda.device_count() - 1}")
        return name
    raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")


def split_train_val(labels: np.ndarray, val_frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (training, validation) tile indices, the validation share drawn per label (stratified)."""
    val_idx: list[int] = []
    for label in (0, 1):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        val_idx += idx[: max(1, round(val_frac * len(idx)))].tolist() if len(idx) > 1 else []
    val_mask = np.zeros(len(labels), bool)
    val_mask[val_idx] = True
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def save_checkpoint(path: Path, state: dict[str, torch.Tensor], epoch: int, val: TileFigures) -> None:
    """Atomically write the best weights so far (`--weights PATH` resumes from it)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": state, "epoch": epoch, "val_accuracy": val.accuracy}, tmp)
    os.replace(tmp, path)


def _probe_indices(
    labels: np.ndarray, train_idx: np.ndarray, rng: np.random.Generator, per_class: int = 128
) -> np.ndarray:
    """Up to `per_class` training tiles of each label: the probe on which dead units are looked for."""
    out = [rng.permutation(train_idx[labels[train_idx] == c])[:per_class] for c in (0, 1)]
    return np.sort(np.concatenate(out))


def to_input_float(images_bgr: torch.Tensor) -> torch.Tensor:
    """float BGR 0..255 (N, 224, 224, 3) -> normalised RGB NCHW."""
    x = images_bgr.flip(-1).permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def lr_at(progress: float, max_lr: float, warmup: float = 0.1, floor: float = 0.02) -> float:
    """Learning rate at `progress` (0..1) of the run: linear warm-up, then cosine down to `floor` x max_lr.

    Progress is the larger of steps done and time budget used, so a run cut by ``max_minutes`` still anneals
    (a step-count one-cycle stopped half way by the clock ends at its highest rate).
    """
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return max_lr * (floor + (1 - floor) * p / warmup)
    q = (p - warmup) / (1 - warmup)
    return max_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * q)))


POINTING_TARGET = 0.85  # the FAM pointing a shipped model must reach
# what can pick the best epoch (TrainSettings.select), as the model card says it
SELECTION_RULES = {
    "accuracy": "accuracy + half the pointing share",
    "auc": f"ROC AUC + half the pointing share up to {POINTING_TARGET * 100:.0f} %",
}
SELECT_BY = tuple(SELECTION_RULES)


def selection_score(v: TileFigures, by: str = "accuracy") -> float:
    """Model selection on validation (NaN counts as 0).

    ``accuracy``: accuracy at the threshold plus half the pointing share. ``auc``: ROC AUC plus half the pointing
    share counted up to ``POINTING_TARGET`` — once the maps meet the target, a tenth of a point of pointing no
    longer outweighs a gain in ranking (with ``accuracy`` a fine-tune from a model pointing at 99 % kept its first
    epoch while the AUC rose for 30 more), and the operating point, which swings from epoch to epoch, does not
    decide; pick the threshold on the validation tiles afterwards (``inspector evaluate --pick-threshold``).
    """
    if by not in SELECT_BY:
        raise ValueError(f"select by {by!r}: choose one of {', '.join(SELECT_BY)}")
    p = 0.0 if math.isnan(v.pointing) else v.pointing
    if by == "auc":
        auc = 0.0 if math.isnan(v.roc_auc) else v.roc_auc
        return auc + 0.5 * min(p, POINTING_TARGET)
    a = 0.0 if math.isnan(v.accuracy) else v.accuracy
    return a + 0.5 * p


def fam_layer_scale(model: VGG16, images_bgr: np.ndarray, batch: int = 64) -> list[float]:
    """Per-layer mean of each fam map on spider-free tiles (manifest ``fam_layer_scale``)."""
    model.eval()
    sums = np.zeros(5)
    count = 0
    with torch.no_grad():
        for i in range(0, len(images_bgr), batch):
            out = model(to_input(torch.from_numpy(images_bgr[i : i + batch])))
            for j in range(5):
                sums[j] += float(out[1 + j].mean()) * out[1 + j].shape[0]
            count += out[0].shape[0]
    return [max(float(v / max(count, 1)), 1e-6) for v in sums]
