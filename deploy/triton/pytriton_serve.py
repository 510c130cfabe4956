"""Serve a contract model (logits + fam1..fam5) on Triton Inference Server through PyTriton, running onnxruntime.

For tests, benchmarks and a CPU-only try-out of `model.backend: triton`; a plant's GPU server serves the model
repository that `inspector model triton-repo` writes instead (Triton's own onnxruntime backend, no Python).

Runs in its own virtual environment made from Debian's /usr/bin/python3 (PyTriton's Python backend stub needs that
interpreter): ``/usr/bin/python3 -m venv V && V/bin/pip install nvidia-pytriton onnxruntime numpy``
(`tools/triton-venv.sh`). It imports neither the inspector package nor PyYAML, so the input and output names come
as options. Prints ``READY http=PORT grpc=PORT`` on stdout once the model is served; stops on SIGTERM/SIGINT.

    V/bin/python deploy/triton/pytriton_serve.py --model demo_vgg16=inspector/models/demo.onnx \
        --http-port 8000 --grpc-port 8001 --metrics-port 8002
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def named_model(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep:
        return "demo_vgg16", Path(text)
    return name, Path(path)


def serving(
    path: Path, input_name: str, out_names: list[str], threads: int
) -> tuple[Callable[..., dict[str, np.ndarray]], list[Tensor], list[Tensor]]:
    """The bound function (onnxruntime on CPU) of one contract model, with its input and output tensors."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    declared = {o.name: o.shape for o in session.get_outputs()}
    missing = [n for n in out_names if n not in declared]
    if missing:
        raise SystemExit(f"pytriton_serve: {path} has no output(s) {missing} (has {sorted(declared)})")
    in_shape = next(i.shape for i in session.get_inputs() if i.name == input_name)

    def dims(shape: list[object]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in shape[1:])

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        outs = session.run(out_names, {input_name: inputs[input_name].astype(np.float32, copy=False)})
        return {name: np.asarray(o, dtype=np.float32) for name, o in zip(out_names, outs, strict=True)}

    inputs = [Tensor(name=input_name, dtype=np.float32, shape=dims(in_shape))]
    outputs = [Tensor(name=n, dtype=np.float32, shape=dims(declared[n])) for n in out_names]
    return infer, inputs, outputs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        type=named_model,
        action="append",
        required=True,
        help="NAME=PATH.onnx of a contract model (repeat for several; a bare path is served as demo_vgg16)",
    )
    p.add_argument("--input", default="input", help="input name (manifest input.name)")
    p.add_argument("--outputs", default="logits,fam1,fam2,fam3,fam4,fam5", help="logits and the five fams, in order")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out_names = [n.strip() for n in args.outputs.split(",") if n.strip()]
    config = TritonConfig(
        http_address=args.address,
        http_port=args.http_port,
        grpc_address=args.address,
        grpc_port=args.grpc_port,
        metrics_address=args.address,
        metrics_port=args.metrics_port,
        exit_on_error=True,
    )
    with Triton(config=config) as triton:
        for name, path in args.model:
            infer, inputs, outputs = serving(path, args.input, out_names, args.threads)
            triton.bind(
                model_name=name,
                infer_func=infer,
                inputs=inputs,
                outputs=outputs,
                config=ModelConfig(
                    max_batch_size=args.max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=500)
                ),
                strict=True,
            )
        triton.run()
        print(f"READY http={args.http_port} grpc={args.grpc_port}", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while triton.is_alive() and not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
