"""A real Triton Inference Server for tests and benchmarks: deploy/triton/pytriton_serve.py (PyTriton, Triton 2.51,
onnxruntime) in the venv that tools/triton-venv.sh builds, started in its own process group on free loopback ports.

    with TritonServer.start({"demo_vgg16": DEMO_MODEL}) as server:
        config = server.config("demo_vgg16", "grpc")     # an inspector TritonConfig pointing at it
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from inspector.config import TritonConfig

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "deploy" / "triton" / "pytriton_serve.py"
START_TIMEOUT_S = 180.0  # ~4-12 s on an idle box; the CI box runs other tests beside it


def triton_venv() -> Path:
    """Where tools/triton-venv.sh puts the server's venv."""
    if os.environ.get("INSPECTOR_TRITON_VENV"):
        return Path(os.environ["INSPECTOR_TRITON_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "grape-spider-inspector" / "triton-venv"


READY = re.compile(r"READY http=\d+ grpc=\d+")  # pytriton_serve.py prints it, in one write, once serving

def unavailable_reason() -> str | None:
    """Why no server test can run here (None: it can): no tritonclient in this venv (the `triton` extra), no
    server venv, or PyTriton missing from it."""
    if importlib.util.find_spec("tritonclient") is None:
        return "tritonclient is not installed in this venv: pip install -e '.[triton]'"
    python = triton_venv() / "bin" / "python"
    if not python.is_file():
        return f"no Triton venv at {triton_venv()} (build it: bash tools/triton-venv.sh)"
    probe = subprocess.run(
        [str(python), "-c", "import pytriton, onnxruntime, numpy"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        tail = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"the Triton venv {triton_venv()} lacks pytriton/onnxruntime ({tail}); rebuild: bash tools/triton-venv.sh"
        )
    return None


def free_ports(n: int) -> list[int]:
    """`n` different free loopback ports (all held open while choosing, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


class TritonServerError(RuntimeError):
    pass


class TritonServer:
    """One pytriton_serve.py process group serving the given contract models; a context manager."""

    def __init__(self, proc: subprocess.Popen[str], http_port: int, grpc_port: int, log_path: Path) -> None:
        self.proc, self.http_port, self.grpc_port, self.log_path = proc, http_port, grpc_port, log_path

    @classmethod
    def start(
        cls, models: dict[str, Path], log_path: Path, threads: int = 1, ports: tuple[int, int] | None = None
    ) -> TritonServer:
        """`ports`: (http, grpc) to serve on, e.g. a stopped server's; free ones when None."""
        ports_3 = free_ports(3)
        ports_list = [*ports, ports_3[2]] if ports is not None else ports_3
        cmd = [str(triton_venv() / "bin" / "python"), str(SERVE), "--threads", str(threads)]
        cmd += [f"--model={name}={path}" for name, path in models.items()]
        cmd += ["--http-port", str(ports_list[0]), "--grpc-port", str(ports_list[1])]
        cmd += ["--metrics-port", str(ports_list[2])]
        with log_path.open("w") as log:  # stdout and stderr: the READY line among Triton's own
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        server = cls(proc, ports_list[0], ports_list[1], log_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            # anywhere in a line: Triton's own log lines are written in pieces and may enclose it
            if READY.search(log_path.read_text(errors="replace")):
                return server
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        server.kill()
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise TritonServerError(f"the Triton server did not become ready (rc {proc.returncode}):\n{tail}")

    def url(self, protocol: str) -> str:
        return f"127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    def config(
        self, model_name: str, protocol: str = "grpc", timeout_s: float = 10.0, start_wait_s: float = 0.0
    ) -> TritonConfig:
        return TritonConfig(
            url=self.url(protocol),
            model_name=model_name,
            protocol=protocol,
            timeout_s=timeout_s,
            start_wait_s=start_wait_s,
        )

    def freeze(self) -> None:
        """SIGSTOP the whole group: the server keeps its sockets but answers nothing (a hung server)."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL the whole group (Triton, its Python backend stubs, the bound function): a server gone."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
