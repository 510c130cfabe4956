"""`inspector` command line. Every user error is one line on stderr and exit status 1 (2 for usage errors).

Each subcommand lives in the module of its stage; this file only wires argparse to them. To add one, write a
`add_parser(subparsers)` function next to your code and register it in `_SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from inspector.errors import InspectorError

# module path -> it defines add_parser(subparsers) that sets `func` on its parser
_SUBCOMMANDS: tuple[str, ...] = (
    "inspector.commands.run",
    "inspector.commands.check_config",
    "inspector.commands.replay",
    "inspector.commands.plan",
    "inspector.commands.calibrate",
    "inspector.commands.model",
    "inspector.commands.actuator_sim",
    "inspector.commands.bench",
    "inspector.commands.soak",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inspector", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMANDS:
        module = importlib.import_module(name)
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InspectorError as exc:
        print(f"inspector: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
