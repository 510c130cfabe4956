"""Supervision: capture-process restarts with back-off and a limit, systemd notification, signals.

The daemon's main loop drives everything from its own thread (no free-running threads)::

    sup = Supervisor(cfg.supervisor, capture, metrics, on_reload=daemon.reload, on_snapshot=recorder.snapshot)
    with sup.signals():                                    # SIGTERM/SIGINT stop, SIGHUP reload, SIGUSR1 snapshot
        while not sup.should_stop:
            sup.check_capture()                            # restart a dead/stalled capture, or raise GaveUp
            ref = capture.get(timeout_s=0.2)
            ...inspect...
            sup.progress(frames=n_captured, inferences=pipeline.inspections_ok, queue_depth=ring.depth,
                         provider=model.provider, ready=True)
        sup.stopping()

``progress`` sends READY=1 once it is told ``ready=True`` (model warm, first frame in), WATCHDOG=1 only when
both the frame and the inference counts advanced since the last ping — the daemon counts only frames inspected
with every tile's output sound (``Pipeline.inspections_ok``), so a stalled inference, a model that fails or returns
NaN, or frames that are all skipped as too late stop the pings and systemd's WatchdogSec restarts the service, STATUS= about once a second, and runs a pending SIGHUP
reload between two frames. ``SdNotify`` writes to ``$NOTIFY_SOCKET`` itself (no dependency); without that
variable it does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import FrameType

from inspector.capture import EXIT_EOF, EXIT_FATAL, CaptureProcess
from inspector.config import SupervisorConfig
from inspector.errors import InspectorError
from inspector.metrics import METRICS, Metrics

log = logging.getLogger(__name__)

Clock = Callable[[], float]
STARTUP_GRACE_S = 30.0


class GaveUp(InspectorError):
    """The capture process kept failing: more restarts than supervisor.max_restarts in the window."""


# ------------------------------------------------------------------------------------------------ sd_notify
class SdNotify:
    """sd_notify(3) over the unix datagram socket systemd names in $NOTIFY_SOCKET."""

    def __init__(self, address: str | None = None, env: dict[str, str] | None = None) -> None:
        e = os.environ if env is None else env
        self.address = address if address is not None else e.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        usec = e.get("WATCHDOG_USEC")
        pid = e.get("WATCHDOG_PID")
        self.watchdog_usec = int(usec) if usec and usec.isdigit() and (not pid or pid == str(os.getpid())) else 0
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def ping_interval_s(self, default_s: float = 1.0) -> float:
        """Half systemd's WatchdogSec (as sd_watchdog_enabled advises), or default_s without one."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else default_s

    def notify(self, *lines: str) -> bool:
        if self._sock is None or not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        try:
            self._sock.sendto("\n".join(lines).encode(), addr)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# ------------------------------------------------------------------------------------------------ supervisor
class Supervisor:
    def __init__(
        self,
        cfg: SupervisorConfig,
        capture: CaptureProcess | None = None,
        metrics: Metrics | None = None,
        notify: SdNotify | None = None,
        on_reload: Callable[[], object] | None = None,
        on_snapshot: Callable[[], None] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.capture = capture
        self.metrics = metrics if metrics is not None else METRICS
        self.notify = notify if notify is not None else SdNotify()
        self.on_reload = on_reload
        self.on_snapshot = on_snapshot
        self.clock = clock
        self.should_stop = False
        self.stop_signal: int | None = None
        self._reload_pending = False
        self._snapshot_pending = False
        self._ready_sent = False
        self._restarts: deque[float] = deque()
        self._restart_at: float | None = None
        self._last_ping: tuple[int, int] | None = None
        self._next_ping_s = clock()
        self._next_status_s = clock()
        self._fps_window: deque[tuple[float, int]] = deque(maxlen=64)
        self.pings = 0

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.should_stop and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: give up on a clean stop
            self.should_stop = True
            self.stop_signal = signum
        elif signum == signal.SIGHUP:
            self._reload_pending = True
        elif signum == signal.SIGUSR1:
            self._snapshot_pending = True

    @contextlib.contextmanager
    def signals(self) -> Iterator[Supervisor]:
        """Install the handlers (main thread only) for the duration of the with block."""
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
        old = {s: signal.signal(s, self._on_signal) for s in sigs}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------ capture health
    def check_capture(self) -> None:
        """Restart a crashed or stalled capture process (with back-off); raise GaveUp past the limit."""
        cap = self.capture
        if cap is None or self.should_stop:
            return
        now = self.clock()
        if self._restart_at is not None:
            if now >= self._restart_at:
                self._restart_at = None
                cap.restart()
            return
        if cap.alive:
            stalled_s = cap.seconds_since_alive()
            allowed_s = self.cfg.stall_timeout_s
            if not cap.child_started:  # a spawned interpreter needs seconds to import OpenCV on a busy machine
                allowed_s = max(allowed_s, STARTUP_GRACE_S)
            if stalled_s <= allowed_s:
                return
            cause = "stalled"
            log.error("capture process pid %s stalled (no progress for %.1f s): restarting", cap.pid, stalled_s)
        else:
            code = cap.exitcode
            if code in (EXIT_EOF, EXIT_FATAL) and (cap.ring.eof or cap.ring.error):
                return  # end of footage, or a source error that get() reports
            cause = "crashed"
            log.error("capture process exited with status %s: restarting", code)
        self._schedule_restart(now, cause)

    def _schedule_restart(self, now: float, cause: str) -> None:
        window = self.cfg.restart_window_s
        while self._restarts and now - self._restarts[0] > window:
            self._restarts.popleft()
        if len(self._restarts) >= self.cfg.max_restarts:
            raise GaveUp(
                f"capture process failed {len(self._restarts) + 1} times within {window:.0f} s "
                f"(supervisor.max_restarts {self.cfg.max_restarts}); check the source, then restart the service"
            )
        self._restarts.append(now)
        backoff = min(self.cfg.backoff_initial_s * 2 ** (len(self._restarts) - 1), self.cfg.backoff_max_s)
        self.metrics.restarts.labels(process="capture").inc()
        self.metrics.capture_restarts.labels(cause=cause).inc()
        self.metrics.camera_up.set(0)
        assert self.capture is not None
        if self.capture.alive:
            self.capture.stop(timeout_s=0.5)  # stalled: kill it now, start again after the back-off
        self._restart_at = now + backoff
        log.warning("capture restart %d in %.1f s", len(self._restarts), backoff)

    # ------------------------------------------------------------------ progress, watchdog, status
    def progress(
        self,
        frames: int,
        inferences: int,
        queue_depth: int = 0,
        provider: str = "",
        ready: bool = True,
    ) -> None:
        """Call once per main-loop iteration with cumulative counts."""
        now = self.clock()
        if self._reload_pending:
            self._reload_pending = False
            self._run_callback(self.on_reload, "reload (SIGHUP)")
        if self._snapshot_pending:
            self._snapshot_pending = False
            self._run_callback(self.on_snapshot, "snapshot (SIGUSR1)")
        self._fps_window.append((now, frames))
        if ready and not self._ready_sent and frames > 0:
            self._ready_sent = True
            self.metrics.up.set(1)
            self.notify.ready(self._status_text(queue_depth, provider))
            log.info("ready")
            self._last_ping = (frames, inferences)
        elif self._ready_sent and now >= self._next_ping_s:
            last = self._last_ping
            if self.notify.enabled and (last is None or (frames > last[0] and inferences > last[1])):
                if self.notify.watchdog():
                    self.metrics.watchdog_pings.inc()
                    self.pings += 1
                    self._last_ping = (frames, inferences)
                    self._next_ping_s = now + self.notify.ping_interval_s()
                else:  # systemd kills us after WatchdogSec without one: try again soon, counted
                    self.metrics.watchdog_ping_failures.inc()
                    self._next_ping_s = now + self.notify.ping_interval_s() / 4
        if now >= self._next_status_s:
            self._next_status_s = now + 1.0
            self.metrics.fps.set(self.fps())
            self.metrics.queue_depth.set(queue_depth)
            if self._ready_sent:
                self.notify.status(self._status_text(queue_depth, provider))

    def _run_callback(self, cb: Callable[[], object] | None, what: str) -> None:
        """Run a signal's callback between two frames; one that returns False applied nothing (it says why)."""
        if cb is None:
            log.info("%s: nothing to do", what)
            return
        try:
            applied = cb()
        except InspectorError as exc:  # a bad config on reload keeps the old settings
            log.error("%s failed, keeping the current settings: %s", what, exc)
            return
        log.info("%s %s", what, "changed nothing" if applied is False else "done")

    def fps(self) -> float:
        w = self._fps_window
        if len(w) < 2 or w[-1][0] <= w[0][0]:
            return 0.0
        return (w[-1][1] - w[0][1]) / (w[-1][0] - w[0][0])

    def _status_text(self, queue_depth: int, provider: str) -> str:
        parts = [f"{self.fps():.1f} fps", f"queue {queue_depth}"]
        if provider:
            parts.append(provider)
        if self._restarts:
            parts.append(f"{len(self._restarts)} capture restart(s)")
        return ", ".join(parts)

    def stopping(self) -> None:
        self.metrics.up.set(0)
        self.notify.stopping()
