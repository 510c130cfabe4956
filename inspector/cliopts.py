"""Option helpers shared by the `inspector` subcommands: named paths, the model option, shares, the extras.

Kept free of heavy imports: `inspector --help` loads every command module, so torch, onnx and matplotlib load
only through :func:`require_extra` inside the commands that need them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from inspector.config import DEFAULT_CALIBRATION, DEMO_MODEL, Calibration, load_calibration
from inspector.errors import InspectorError

# pip extra that installs each optional module
EXTRA_OF = {
    "torch": "train",
    "onnx": "train",
    "h5py": "train",
    "matplotlib": "plots",
    "pymodbus": "gateway",
    "asyncua": "gateway",
    "tritonclient.http": "triton",
    "tritonclient.grpc": "triton",
}


def require_extra(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or fail with one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRA_OF.get(module, "dev")
        raise InspectorError(f"{purpose} needs {module}: pip install 'grape-spider-inspector[{extra}]'") from None


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    doc: str | None,
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """The parser of subcommand `name`, described by the first line of its module's `doc`, running `func`."""
    p = sub.add_parser(name, help=help, description=(doc or "").splitlines()[0])
    p.set_defaults(func=func)
    return p


def named_item(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (NAME, VALUE); a bare ``VALUE`` is named after its last path part."""
    name, sep, value = text.partition("=")
    if not sep:
        return Path(text).name, text
    return name, value


def add_model_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEMO_MODEL, help="ONNX model with its manifest beside it")


def add_threads_argument(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--threads", type=int, default=2, help=help)


def calibration_or_default(path: Path | None) -> Calibration:
    """The calibration file at `path`, or the built-in one."""
    return load_calibration(path) if path else DEFAULT_CALIBRATION


def check_share(flag: str, value: float) -> None:
    """A share option must lie in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise InspectorError(f"{flag} must be a share in [0, 1], got {value:g}")


def optional_pyplot() -> ModuleType | None:
    """matplotlib.pyplot on the file-only Agg backend, or None where matplotlib is not installed (plots are extras)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
