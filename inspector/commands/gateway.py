"""`inspector gateway`: the PLC ejector gateway (inspector/gateway.py): check its config, or serve."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gateway",
        help="PLC ejector gateway: the controller end of the reject protocol, driving a PLC (Modbus TCP / OPC UA)",
        description="PLC ejector gateway: speaks the reject protocol (inspector/messages.py) as the controller and "
        "drives the ejector outputs of a PLC over Modbus TCP or OPC UA (docs/PLC.md: the register/node map). "
        "Needs the gateway extra: pip install 'grape-spider-inspector[gateway]'.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", type=Path, help="serve with this config (deploy/gateway.example.yaml) until SIGTERM")
    what.add_argument("--check", type=Path, metavar="CONFIG", help="validate CONFIG: one line per mistake, exit 1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.gateway import load_gateway_config, serve_gateway

    if args.check is not None:
        load_gateway_config(args.check)
        print(f"{args.check}: OK")
        return 0
    return serve_gateway(load_gateway_config(args.config))
