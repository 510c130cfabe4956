"""`inspector` command line. Every user error is one line on stderr and exit status 1 (2 for usage errors).

Each subcommand lives in the module of its stage; this file only wires argparse to them. To add one, write a
`add_parser(subparsers)` function next to your code and register it in `_SUBCOMMANDS`. A command named after its
module (`actuator-sim` in `inspector.commands.actuator_sim`) loads only that module, so it starts without the
imports of the others (the actuator simulator is restarted in tests and runs beside the daemon).
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
    "inspector.commands.train",
    "inspector.commands.evaluate",
    "inspector.commands.tiles",
    "inspector.commands.footage",
    "inspector.commands.tradeoff",
    "inspector.commands.actuator_sim",
    "inspector.commands.gateway",
    "inspector.commands.bench",
    "inspector.commands.soak",
)


def build_parser(modules: Sequence[str] = _SUBCOMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inspector", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        module = importlib.import_module(name)
        module.add_parser(sub)
    return parser


def modules_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The command modules a command line needs: the one named after its command, else all of them."""
    command = next((a for a in argv if not a.startswith("-")), None)
    own = tuple(m for m in _SUBCOMMANDS if m.rsplit(".", 1)[-1].replace("_", "-") == command)
    return own or _SUBCOMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(modules_for(argv)).parse_args(argv)
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
