"""The reject review page: recent rejects, newest first, with their evidence picture, reason, score, time and bunch.

One page (`inspector/static/review.html`, plain HTML and JavaScript, no outside resource) in two forms:

- served by the daemon (`ReviewServer`, read-only, on `review.address:review.port`, default
  http://127.0.0.1:9109/review): the page polls ``/review/rejects.json`` every two seconds and redraws when a reject
  was added — no reload; pictures come from ``/review/evidence/<name>``. Only GET, only those paths, only file
  names of the evidence folder (no path leaves it).
- written by `inspector replay` as ``review.html`` in its out dir (`write_static_page`): the same page with its data
  embedded, pictures linked relative to it (``evidence/<name>``); it opens from the file system.

The data is the tail of ``decisions.jsonl`` (the last `TAIL_BYTES`), rejects only, newest first, at most `LIMIT`;
a line that is not JSON (a torn last line, a foreign line) is skipped and counted (``skipped_lines``).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from inspector.config import ReviewConfig
from inspector.errors import InspectorError

log = logging.getLogger(__name__)

LIMIT = 200  # rejects on the page
TAIL_BYTES = 4 * 1024 * 1024  # how much of the end of decisions.jsonl is read per request
POLL_MS = 2000
_EVIDENCE_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.jpg$")
_FIELDS = (
    "bunch_id",
    "decision",
    "reason",
    "detail",
    "score",
    "threshold",
    "frame",
    "judged_frames",
    "t_capture_s",
    "t_unix_s",
    "fire_at_s",
    "evidence",
)


def read_rejects(jsonl: Path, limit: int = LIMIT, tail_bytes: int = TAIL_BYTES) -> dict[str, Any]:
    """``{"rejects": [...newest first...], "total_rejects": n, "skipped_lines": k}`` from the end of `jsonl`."""
    rejects: list[dict[str, Any]] = []
    skipped = 0
    try:
        with jsonl.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - tail_bytes))
            raw = fh.read()
    except FileNotFoundError:
        raw, size = b"", 0
    lines = raw.split(b"\n")
    if size > tail_bytes:
        lines = lines[1:]  # the first line was cut by the seek
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if not isinstance(row, dict) or "bunch_id" not in row or "reason" not in row:
            skipped += 1
            continue
        if row.get("decision") == "reject":
            rejects.append({k: row.get(k) for k in _FIELDS})
    rejects.reverse()
    return {"rejects": rejects[:limit], "total_rejects": len(rejects), "skipped_lines": skipped}


def page(config: dict[str, Any]) -> str:
    """The page with `config` (poll URL, evidence base, embedded data) in place of its default."""
    template = resources.files("inspector").joinpath("static/review.html").read_text(encoding="utf-8")
    start, end = template.index("/*CONFIG*/"), template.index("/*END*/")
    blob = json.dumps(config).replace("</", "<\\/")  # embedded data must not close the script element
    return template[:start] + blob + template[end + len("/*END*/") :]


def write_static_page(out_dir: Path, jsonl: Path, evidence_rel: str = "evidence/", source: str = "") -> Path:
    """`review.html` in `out_dir`: the page with the rejects of `jsonl` embedded; pictures relative to the page."""
    data = read_rejects(jsonl, limit=10**9, tail_bytes=1 << 40)
    data["source"] = source
    path = out_dir / "review.html"
    path.write_text(page({"poll": None, "evidence": evidence_rel, "data": data, "interval_ms": POLL_MS}), "utf-8")
    return path


class _Handler(BaseHTTPRequestHandler):
    server: _ReviewHTTPServer
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        srv = self.server
        if path in ("/review", "/review/"):
            body = page(
                {"poll": "/review/rejects.json", "evidence": "/review/evidence/", "data": None, "interval_ms": POLL_MS}
            )
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", body.encode())
        elif path == "/review/rejects.json":
            self._send(HTTPStatus.OK, "application/json", json.dumps(read_rejects(srv.jsonl)).encode())
        elif path.startswith("/review/evidence/") and srv.evidence_dir is not None:
            name = path[len("/review/evidence/") :]
            file = srv.evidence_dir / name
            if not _EVIDENCE_NAME.match(name) or not file.is_file():
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"no such evidence picture\n")
                return
            self._send(HTTPStatus.OK, "image/jpeg", file.read_bytes())
        elif path == "/":
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", "/review")
            self.end_headers()
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found; the review page is /review\n")

    def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("review %s: " + format, self.address_string(), *args)


class _ReviewHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], jsonl: Path, evidence_dir: Path | None) -> None:
        self.jsonl = jsonl
        self.evidence_dir = evidence_dir
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class ReviewServer:
    """The review page on `address:port` (port 0: a free one) in a thread; a context manager."""

    def __init__(self, address: str, port: int, jsonl: Path, evidence_dir: Path | None) -> None:
        try:
            self._server = _ReviewHTTPServer((address, port), jsonl, evidence_dir)
        except OSError as exc:
            raise InspectorError(
                f"cannot serve the review page on {address}:{port} ({exc.strerror}); "
                "set review.port to a free port (or review.enabled: false)"
            ) from None
        self.address = address
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="review-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/review"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve_review(config: ReviewConfig, jsonl: Path | None, evidence_dir: Path | None) -> ReviewServer | None:
    """The daemon's review page, or None when it is off or there is no decision log to show."""
    if not config.enabled:
        return None
    if jsonl is None:
        log.info("review page off: no output.decisions_jsonl to show")
        return None
    server = ReviewServer(config.address, config.port, jsonl, evidence_dir)
    log.info("reject review page on %s", server.url)
    return server
