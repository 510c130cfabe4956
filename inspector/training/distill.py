"""Soft targets for knowledge distillation: an ensemble's spider probability for every tile of a training set.

Averaging the probabilities of two independently trained models lifts tile accuracy (measured: J + R6 94.9 %
against J's 94.5 % on `v3_val`) at twice the inference cost, which the line cannot pay. Distillation moves that
gain into one model of the shipped size: the student learns from the ensemble's probabilities as well as from the
labels (:attr:`inspector.training.train.TrainSettings.distill`). The teachers run once, through the daemon's own
onnxruntime path, before training starts; no torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inspector.model import Model
from inspector.synth.tiles import TileSet
from inspector.types import FloatArray


def teacher_spider_prob(
    model_paths: Sequence[Path], tiles: TileSet, hflip: bool = False, batch: int = 32, threads: int = 2
) -> FloatArray:
    """(N,) float32: the mean spider probability of `model_paths` on each tile of `tiles` (and of its mirror image
    when `hflip`), in the tile set's order. Raises ValueError without a model."""
    if not model_paths:
        raise ValueError("teacher_spider_prob: no teacher model given")
    views = [tiles.images, tiles.images[:, :, ::-1]] if hflip else [tiles.images]
    total = np.zeros(len(tiles), np.float64)
    for path in model_paths:
        with Model(path, providers=("cpu",), threads=threads, batch_size=batch) as model:
            for view in views:
                for i in range(0, len(tiles), batch):
                    total[i : i + batch] += model.infer(np.ascontiguousarray(view[i : i + batch])).spider_prob
    return (total / (len(model_paths) * len(views))).astype(np.float32)
