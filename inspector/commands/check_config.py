"""`inspector check-config FILE`: validate a daemon config (or a calibration file with --calibration)."""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.config import calibration_for, load_calibration, load_config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-config", help="validate a config file; exit 0 when valid, 1 when not")
    p.add_argument("file", type=Path, help="daemon config YAML")
    p.add_argument("--calibration", action="store_true", help="FILE is a calibration file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.calibration:
        load_calibration(args.file)
    else:
        config = load_config(args.file)
        calibration_for(config)
        from inspector.model import load_manifest

        load_manifest(config.model.path)
    print(f"{args.file}: OK")
    return 0
