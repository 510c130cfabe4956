#!/usr/bin/env python3
"""Make any VGG16 ONNX (PyTorch- or Keras/tf2onnx-exported) honour the inspector's model contract.

Adds `logits` and `fam1..fam5` (channel sums of pool1..pool5, computed inside the graph), optionally raw
`pool1..pool5`, and writes the manifest OUT.yaml beside OUT.onnx. Same as `inspector model expose`.

    python tools/expose_pool_outputs.py vgg16.onnx models/line3.onnx --preset torchvision
    python tools/expose_pool_outputs.py keras_vgg16.onnx models/k.onnx --preset keras-caffe --pools

Needs the `onnx` package (pip install 'grape-spider-inspector[dev]'); the check of the result needs onnxruntime.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from inspector.commands.model import add_expose_arguments, run_expose
from inspector.errors import InspectorError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_expose_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run_expose(args)
    except InspectorError as exc:
        print(f"expose_pool_outputs: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
