"""`inspector model info MODEL.onnx` and `inspector model expose IN.onnx OUT.onnx`.

info: the manifest, the graph's inputs and outputs with shapes, the provider actually used; with --run, one
batch of random tiles (output shapes, spider probabilities, time per batch).
expose: make any VGG16 ONNX honour the model contract (inspector/expose.py; needs the `onnx` package).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from inspector.errors import ModelError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="inspect a model or make a VGG16 ONNX honour the model contract")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    info = msub.add_parser("info", help="print manifest, inputs/outputs with shapes and the provider used")
    info.add_argument("model", type=Path, help="MODEL.onnx (manifest MODEL.yaml beside it)")
    info.add_argument("--providers", default="auto", help="comma-separated: auto, tensorrt, cuda, cpu (default: auto)")
    info.add_argument("--batch-size", type=int, default=16)
    info.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = onnxruntime's default")
    info.add_argument("--run", action="store_true", help="also run one batch of random tiles and time it")
    info.set_defaults(func=run_info)
    expose = msub.add_parser("expose", help="add logits + fam1..fam5 outputs to a VGG16 ONNX and write a manifest")
    add_expose_arguments(expose)
    expose.set_defaults(func=run_expose)


def run_info(args: argparse.Namespace) -> int:
    from inspector.model import Model

    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    with Model(args.model, providers=providers, threads=args.threads, batch_size=args.batch_size) as model:
        print(f"# {args.model}")
        print(model.manifest.to_yaml().rstrip())
        print("# graph")
        ort = getattr(model.backend, "session", None)
        if ort is not None:
            for i in ort.get_inputs():
                print(f"input   {i.name:<24} {i.type:<16} {list(i.shape)}")
            for o in ort.get_outputs():
                print(f"output  {o.name:<24} {o.type:<16} {list(o.shape)}")
        print(f"provider: {model.provider}")
        print(f"classes: {model.num_classes}  spider_index: {model.manifest.spider_index}")
        print(f"batch_size: {model.batch_size}")
        if args.run:
            size = model.manifest.input.size
            tiles = np.random.default_rng(0).integers(0, 256, (model.batch_size, size, size, 3), dtype=np.uint8)
            model.warmup()
            t0 = time.perf_counter()
            res = model.infer(tiles)
            dt = time.perf_counter() - t0
            print(f"run: {len(res)} random tiles in {dt * 1000:.1f} ms ({dt * 1000 / len(res):.2f} ms/tile)")
            print(f"  logits {res.logits.shape}  spider_prob mean {float(res.spider_prob.mean()):.3f}")
            for layer, fam in enumerate(res.fams, start=1):
                print(f"  fam{layer} {fam.shape}  mean {float(fam.mean()):.3g}")
    return 0


def _floats3(text: str) -> tuple[float, float, float]:
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers like '0.485,0.456,0.406', got {text!r}")
    try:
        a, b, c = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers, got {text!r}") from None
    return a, b, c


def _scale(text: str) -> float:
    """A number or a fraction like 1/255."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 1/255, got {text!r}") from None


def add_expose_arguments(p: argparse.ArgumentParser) -> None:
    """The expose options, shared by `inspector model expose` and tools/expose_pool_outputs.py."""
    p.add_argument("input", type=Path, help="IN.onnx: a VGG16 exported from PyTorch or Keras (tf2onnx)")
    p.add_argument("output", type=Path, help="OUT.onnx; the manifest is written beside it as OUT.yaml")
    p.add_argument(
        "--preset",
        choices=("torchvision", "keras-caffe"),
        help="input normalisation: torchvision = RGB, 1/255, ImageNet mean/std; "
        "keras-caffe = BGR, scale 1, mean [103.939, 116.779, 123.68], std 1",
    )
    p.add_argument("--color", choices=("RGB", "BGR"), help="channel order the model expects (overrides preset)")
    p.add_argument("--scale", type=_scale, help="pixel scale, e.g. 1/255 (overrides preset)")
    p.add_argument("--mean", type=_floats3, help="per-channel mean in the model's channel order, 'a,b,c'")
    p.add_argument("--std", type=_floats3, help="per-channel std in the model's channel order, 'a,b,c'")
    p.add_argument("--spider-index", type=int, default=1, help="class index of 'spider' (default 1)")
    p.add_argument("--name", help="model name in the manifest (default: OUT's file stem)")
    p.add_argument("--pools", action="store_true", help="also expose raw pool1..pool5 (debugging; large)")
    p.add_argument("--logits", help="the classifier output's name when the graph has several outputs")
    p.add_argument("--size", type=int, help="input side in pixels when the graph's input size is symbolic")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check of the written model")


def run_expose(args: argparse.Namespace) -> int:
    from inspector.expose import expose_file, normalisation

    if args.spider_index < 0:
        raise ModelError(f"--spider-index must be >= 0, got {args.spider_index}")
    norm = normalisation(args.preset, args.color, args.scale, args.mean, args.std)
    report = expose_file(
        args.input,
        args.output,
        norm,
        spider_index=args.spider_index,
        name=args.name,
        pools=args.pools,
        logits=args.logits,
        size=args.size,
        verify=not args.no_verify,
    )
    g = report.graph
    print(
        f"{args.input}: {g.layout} input {g.input_name!r} {g.size}x{g.size}, head {g.head}, logits from {g.logits_src!r}"
    )
    for layer, p in enumerate(g.pools, start=1):
        print(f"  pool{layer}: {p.node!r} after {p.convs} conv(s), {p.channels} channels -> fam{layer}")
    for w in g.warnings:
        print(f"  warning: {w}")
    print(f"wrote {report.onnx_path} and {report.manifest_path}")
    for key, diff in report.parity.items():
        print(f"  check {key}: max abs diff {diff:.3g}")
    return 0
