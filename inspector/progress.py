"""Progress of the long steps (footage render, replay, tile making, training, evaluation) on the terminal: one bar
on stderr (tqdm), updated at most twice a second, and nothing at all when stderr is not a terminal (logs, CI, pipes).

    for frame in progress(frames, total=n, desc="footage", unit="frame"): ...
    with Progress(total=n, desc="replay", unit="frame") as bar: bar.update(1, rejects=3)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
MIN_INTERVAL_S = 0.5


def _bar(total: int | None, desc: str, unit: str, stream: TextIO | None, leave: bool, iterable: Any = None) -> Any:
    stream = stream if stream is not None else sys.stderr  # looked up now: stderr may have been replaced
    quiet = stream.closed or not stream.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=stream,
        disable=quiet,
        leave=leave,
        mininterval=MIN_INTERVAL_S,
        dynamic_ncols=True,
    )


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    unit: str,
    total: int | None = None,
    leave: bool = True,
    stream: TextIO | None = None,
) -> Iterator[T]:
    """`iterable`, drawing a bar while it is consumed (`total`: its length when it has none)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = _bar(total, desc, unit, stream, leave, iterable)
    try:
        yield from bar
    finally:
        bar.close()


class Progress:
    """A bar advanced by hand, with figures beside it (``rejects=3``); a context manager."""

    def __init__(
        self, total: int | None, *, desc: str, unit: str, leave: bool = True, stream: TextIO | None = None
    ) -> None:
        self._bar = _bar(total, desc, unit, stream, leave)

    @property
    def enabled(self) -> bool:
        return not self._bar.disable

    def update(self, n: int = 1, **figures: object) -> None:
        if self._bar.disable:
            return
        if figures:
            self._bar.set_postfix(figures, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
