#!/usr/bin/env python3
"""Halve a contract model's file: store its large weights as float16, each behind a Cast back to float32.

    python tools/fp16_weights.py MODEL.onnx OUT.onnx

The graph still computes in float32 (onnxruntime folds the casts when a session opens: same speed, same float32
input and outputs); only the stored weights are rounded to fp16's 11 bits. Writes OUT.onnx and OUT.yaml (MODEL's
manifest, unchanged) and prints the sizes and the largest change of every output and of the spider probability on
random inputs. Needs the ``train`` extra (onnx).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.errors import InspectorError


def run(src: Path, out: Path, samples: int = 4) -> int:
    import numpy as np
    import onnxruntime as ort

    from inspector.model import load_manifest, manifest_path
    from inspector.training.export import SPIDER_INDEX, store_weights_fp16

    if not src.is_file():
        raise InspectorError(f"{src}: no such model file")
    if out.suffix != ".onnx" or out.resolve() == src.resolve():
        raise InspectorError(f"{out}: the output must be another file ending in .onnx")
    load_manifest(src)  # a contract model: its manifest travels with it
    manifest = manifest_path(src)
    assert manifest is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out)
    shutil.copyfile(manifest, out.with_suffix(manifest.suffix))
    try:
        before, after = store_weights_fp16(out)
    except ValueError as exc:
        out.unlink()
        raise InspectorError(str(exc)) from None
    x = np.random.default_rng(0).standard_normal((samples, 3, 224, 224)).astype(np.float32)
    ref, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, out))
    names = [o.name for o in ref.get_outputs()]
    a, b = ref.run(names, {"input": x}), got.run(names, {"input": x})
    diffs = ", ".join(f"{n} {float(np.max(np.abs(u - v))):.2e}" for n, u, v in zip(names, a, b, strict=True))

    def spider_prob(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(e[:, SPIDER_INDEX] / e.sum(axis=1))

    dp = float(np.max(np.abs(spider_prob(a[0]) - spider_prob(b[0]))))
    print(f"wrote {out} ({after / 1e6:.1f} MB, was {before / 1e6:.1f} MB: x{after / before:.2f})")
    print(f"max abs change on {samples} random inputs: {diffs}; spider probability {dp:.1e}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("model", type=Path, help="contract model (.onnx with its manifest beside it)")
    p.add_argument("out", type=Path, help="output .onnx (its manifest goes beside it)")
    args = p.parse_args(argv)
    try:
        return run(args.model, args.out)
    except InspectorError as exc:
        print(f"fp16_weights: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
