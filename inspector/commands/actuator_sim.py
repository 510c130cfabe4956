"""`inspector actuator-sim`: the reference ejector controller (inspector/actuator_sim.py) on a ROUTER socket."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from inspector.actuator_sim import add_arguments

    p = sub.add_parser(
        "actuator-sim",
        help="reference ejector controller: acks and fires rejects, logs every event as JSON lines",
        description="Reference ejector controller: speaks the reject protocol (inspector/messages.py), acks every "
        "reject, fires each at its fire time and logs every event as one JSON object per line.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.actuator_sim import run as serve

    return serve(args)
