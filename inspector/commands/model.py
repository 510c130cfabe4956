"""`inspector model info|expose|export|quantize|fp16|triton-repo`: look at, make, convert and serve contract models.

info: the manifest, the graph's inputs and outputs with shapes, the provider actually used; with --run, one
batch of random tiles (output shapes, spider probabilities, time per batch). With --triton URL --model-name NAME the
same for a model served by a Triton Inference Server (the manifest from MODEL, or from the server's model config).
triton-repo: a Triton model repository for the onnxruntime backend (config.pbtxt, dynamic batching, the manifest).
expose: make any VGG16 ONNX honour the model contract (inspector/expose.py; needs the `onnx` package).
export: our VGG16 (torchvision layer names, width divisor, 2-class head) as ONNX + manifest, with a PyTorch vs
onnxruntime parity check (inspector/training/export.py; needs the `train` extra).
quantize: int8 static quantisation, compared with the fp32 model on tiles (inspector/quantize.py).
fp16: the same model with its large weights stored as float16, half the file (inspector/fp16.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inspector.errors import InspectorError, ModelError

if TYPE_CHECKING:
    from inspector.model import Model

TRAIN_EXTRA = "pip install 'grape-spider-inspector[train]'"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="inspect a model or make a VGG16 ONNX honour the model contract")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    info = msub.add_parser("info", help="print manifest, inputs/outputs with shapes and the provider used")
    info.add_argument(
        "model", type=Path, nargs="?", help="MODEL.onnx (manifest MODEL.yaml beside it); with --triton: optional"
    )
    info.add_argument("--triton", metavar="HOST:PORT", help="ask a Triton Inference Server instead of loading MODEL")
    info.add_argument("--model-name", help="the model's name on the Triton server")
    info.add_argument("--model-version", default="", help="its version (default: the server's choice)")
    info.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="grpc (port 8001) or http (8000)")
    info.add_argument("--timeout", type=float, default=5.0, help="seconds per request to the server (default 5)")
    info.add_argument("--providers", default="auto", help="comma-separated: auto, tensorrt, cuda, cpu (default: auto)")
    info.add_argument("--batch-size", type=int, default=16)
    info.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = onnxruntime's default")
    info.add_argument("--run", action="store_true", help="also run one batch of random tiles and time it")
    info.set_defaults(func=run_info)
    expose = msub.add_parser("expose", help="add logits + fam1..fam5 outputs to a VGG16 ONNX and write a manifest")
    add_expose_arguments(expose)
    expose.set_defaults(func=run_expose)
    export = msub.add_parser(
        "export", help="export our VGG16 (any width, torchvision/HED/ONNX weights) as ONNX + manifest, check parity"
    )
    add_export_arguments(export)
    export.set_defaults(func=run_export)
    quantize = msub.add_parser(
        "quantize", help="int8 static quantisation calibrated on tiles; prints fp32 vs int8 speed and agreement"
    )
    add_quantize_arguments(quantize)
    quantize.set_defaults(func=run_quantize)
    fp16 = msub.add_parser("fp16", help="store a model's large weights as float16 (half the file, float32 compute)")
    fp16.add_argument("model", type=Path, help="contract model (.onnx with its manifest beside it)")
    fp16.add_argument("out", type=Path, help="output .onnx (its manifest goes beside it)")
    fp16.set_defaults(func=run_fp16)
    repo = msub.add_parser(
        "triton-repo", help="write a Triton model repository (onnxruntime backend, dynamic batching) for a model"
    )
    repo.add_argument("--model", type=Path, required=True, help="contract model (.onnx with its manifest beside it)")
    repo.add_argument("--out", type=Path, required=True, help="the model repository folder (created or added to)")
    repo.add_argument("--name", default="demo_vgg16", help="model name on the server (model.triton.model_name)")
    repo.add_argument("--max-batch-size", type=int, default=64, help="largest batch the server forms (default 64)")
    repo.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="instance kind (default gpu)")
    repo.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    repo.add_argument(
        "--tensorrt",
        choices=("fp32", "fp16"),
        help="run the model through TensorRT inside onnxruntime (GPU); fp16 changes the numbers: check decisions",
    )
    repo.set_defaults(func=run_triton_repo)


def _open_for_info(args: argparse.Namespace) -> Model:
    from inspector.model import Model

    if args.triton is None:
        if args.model is None:
            raise InspectorError("inspector model info: give MODEL.onnx, or --triton HOST:PORT --model-name NAME")
        providers = [p.strip() for p in args.providers.split(",") if p.strip()]
        return Model(args.model, providers=providers, threads=args.threads, batch_size=args.batch_size)
    from inspector.model_triton import TritonModel, config_from_options

    if not args.model_name:
        raise InspectorError("inspector model info --triton: give --model-name, the model's name on the server")
    config = config_from_options(
        "inspector model info --triton",
        url=args.triton,
        model_name=args.model_name,
        model_version=args.model_version,
        protocol=args.protocol,
        timeout_s=args.timeout,
        start_wait_s=0.0,  # a person asking: the answer now
    )
    return TritonModel(config, args.model, args.batch_size)


def run_info(args: argparse.Namespace) -> int:
    with _open_for_info(args) as model:
        print(f"# {args.model or model.provider}")
        print(model.manifest.to_yaml().rstrip())
        print("# graph")
        ort = getattr(model.backend, "session", None)
        if ort is not None:
            for i in ort.get_inputs():
                print(f"input   {i.name:<24} {i.type:<16} {list(i.shape)}")
            for o in ort.get_outputs():
                print(f"output  {o.name:<24} {o.type:<16} {list(o.shape)}")
        served = getattr(model.backend, "served", None)
        if served is not None:
            print(
                f"server: {served.platform} model {served.name}, versions {served.versions}, "
                f"max_batch_size {served.max_batch_size}"
            )
            for kind, tensors in (("input", served.inputs), ("output", served.outputs)):
                for name, (dtype, shape) in tensors.items():
                    print(f"{kind:<7} {name:<24} {dtype:<16} {shape}")
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
    """The options of `inspector model expose`."""
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


def add_export_arguments(p: argparse.ArgumentParser) -> None:
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


def run_export(args: argparse.Namespace) -> int:
    """Build VGG16 at `--width`, load `--weights`, write OUT.onnx + OUT.yaml, print the parity check."""
    try:
        import torch

        from inspector.training.export import export_model, format_parity
        from inspector.training.vgg import VGG16, load_weights, parse_width
    except ImportError:
        raise InspectorError(f"inspector model export needs torch and onnx: {TRAIN_EXTRA}") from None

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


def add_quantize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="fp32 ONNX model with its manifest beside it")
    p.add_argument("--out", type=Path, help="int8 model path (default MODEL.int8.onnx beside the input)")
    p.add_argument("--tiles", type=Path, help="tile set folder from `inspector tiles make` (tiles.npz)")
    p.add_argument("--footage", type=Path, help="folder with footage.avi + labels.jsonl + calibration.yaml")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "inspector-quantize")
    p.add_argument("--calib-n", type=int, default=64, help="calibration tiles (half spider, half spider-free)")
    p.add_argument("--eval-n", type=int, default=96, help="evaluation tiles when cutting from footage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the comparison as JSON")


def run_quantize(args: argparse.Namespace) -> int:
    """Cut tiles, quantise on the calibration part, compare fp32 and int8 on the rest."""
    from inspector.model import load_manifest
    from inspector.quantize import (
        compare,
        format_comparison,
        int8_path,
        load_tiles,
        quantize_model,
        require_onnx,
        split_tiles,
    )

    require_onnx()  # before cutting tiles, which can take a while
    if not args.model.is_file():
        raise ModelError(f"{args.model}: model file not found; give an exported .onnx with its manifest")
    size = load_manifest(args.model).input.size
    out = args.out or int8_path(args.model)
    tiles = load_tiles(args.work, size, args.calib_n + args.eval_n, args.seed, args.tiles, args.footage)
    calib, evaluation = split_tiles(tiles, args.calib_n, args.seed)
    t0 = time.perf_counter()
    quantize_model(args.model, out, calib.images)
    print(
        f"quantize: wrote {out} and {out.with_suffix('.yaml').name} ({len(calib)} calibration tiles, "
        f"{time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    comparison = compare(args.model, out, evaluation)
    print(f"quantize: {format_comparison(comparison)}")
    if args.json:
        args.json.write_text(json.dumps(asdict(comparison), indent=2) + "\n")
    return 0


def run_fp16(args: argparse.Namespace) -> int:
    from inspector.fp16 import write_fp16_copy

    for line in write_fp16_copy(args.model, args.out).lines():
        print(line)
    return 0


def run_triton_repo(args: argparse.Namespace) -> int:
    from inspector.model_triton import RepoOptions, write_model_repository

    options = RepoOptions(args.max_batch_size, args.kind, args.instances, args.tensorrt)
    config, weights = write_model_repository(args.model, args.out, args.name, options)
    print(f"wrote {config}")
    print(f"wrote {weights}")
    print(f"serve it: tritonserver --model-repository {args.out}  (model.triton.model_name: {args.name})")
    return 0
