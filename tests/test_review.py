"""The reject review page: its data (the tail of decisions.jsonl), its server, and the page in a real headless
Chromium — it loads, shows a planted reject with its picture, the reason filter hides and shows it, and a new reject
appears without a reload; the static page replay writes works from the file system."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from inspector.decision_log import DecisionLog
from inspector.review import ReviewServer, read_rejects, write_static_page
from inspector.types import Decision
from tests.browser import Browser


def decision(bunch_id: int, reason: str, score: float = 0.9, frame: int = 10) -> Decision:
    verdict = "pass" if reason == "pass" else "reject"
    return Decision(
        bunch_id=bunch_id,
        decision=verdict,
        reason=reason,
        score=score,
        frame=frame,
        bbox_xyxy=(10, 10, 50, 50),
        spider_xy=None,
        fire_at_s=frame / 10 + 5.3,
        inspected_frames=2,
        t_capture_s=frame / 10,
        detail=f"planted {reason} bunch {bunch_id}",
        judged_frames=(frame - 4, frame),
        threshold=0.5,
    )


def plant(tmp_path: Path, decisions: list[Decision], append: bool = True) -> tuple[Path, Path]:
    """Decisions and their evidence pictures (cards: no frame kept), written as the daemon writes them."""
    jsonl, evidence = tmp_path / "decisions.jsonl", tmp_path / "evidence"
    with DecisionLog(jsonl, evidence, append=append, wall_clock=True) as log:
        log.write(decisions, {})
    return jsonl, evidence


def keep_screenshot(path: Path) -> None:
    """INSPECTOR_SCREENSHOTS=DIR keeps the page's screenshots for people to look at."""
    keep = os.environ.get("INSPECTOR_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def test_rejects_newest_first_torn_and_foreign_lines_counted(tmp_path: Path) -> None:
    jsonl, _ = plant(tmp_path, [decision(1, "spider"), decision(2, "pass"), decision(3, "uninspected")])
    with jsonl.open("a") as fh:
        fh.write("not json\n" + json.dumps({"something": "else"}) + "\n" + '{"bunch_id": 4, "decis')  # torn last line
    data = read_rejects(jsonl)
    assert [r["bunch_id"] for r in data["rejects"]] == [3, 1]
    assert data["total_rejects"] == 2 and data["skipped_lines"] == 3
    assert data["rejects"][0]["evidence"] == data["rejects"][0]["evidence"].split("/")[-1]
    assert data["rejects"][0]["detail"] == "planted uninspected bunch 3"
    raw = jsonl.read_bytes()
    from_line_3 = len(raw) - raw.index(b'{"bunch_id": 3')
    tail = read_rejects(jsonl, tail_bytes=from_line_3 + 5)  # starts 5 bytes into line 2: dropped, not counted
    assert tail["skipped_lines"] == 3 and [r["bunch_id"] for r in tail["rejects"]] == [3]
    assert read_rejects(tmp_path / "absent.jsonl") == {"rejects": [], "total_rejects": 0, "skipped_lines": 0}


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_server_serves_page_data_and_pictures_only(tmp_path: Path, address: str) -> None:
    jsonl, evidence = plant(tmp_path, [decision(7, "spider")])
    with ReviewServer(address, 0, jsonl, evidence) as server:
        base = server.url.rsplit("/review", 1)[0]
        status, kind, body = get(server.url)
        assert status == 200 and kind.startswith("text/html") and b"/review/rejects.json" in body
        status, kind, body = get(base + "/review/rejects.json")
        rows = json.loads(body)["rejects"]
        assert status == 200 and [r["bunch_id"] for r in rows] == [7]
        status, kind, body = get(base + "/review/evidence/" + rows[0]["evidence"])
        assert status == 200 and kind == "image/jpeg" and body[:2] == b"\xff\xd8"
        for path in ("/review/evidence/../decisions.jsonl", "/review/evidence/%2e%2e/decisions.jsonl", "/metrics"):
            assert get(base + path)[0] == 404, path


def test_served_page_in_chromium_filters_and_updates_without_reload(tmp_path: Path) -> None:
    jsonl, evidence = plant(tmp_path, [decision(7, "spider"), decision(8, "uninspected", score=0.1)])
    with ReviewServer("127.0.0.1", 0, jsonl, evidence) as server, Browser.launch(tmp_path) as browser:
        browser.navigate(server.url)
        browser.wait_for("document.querySelectorAll('article.reject').length === 2")
        order = browser.evaluate("[...document.querySelectorAll('article.reject')].map(a => a.dataset.bunch)")
        assert order == ["8", "7"]  # newest first
        spider = "document.querySelector('article[data-bunch=\"7\"]')"
        assert browser.wait_for(f"{spider}.querySelector('img').complete && {spider}.querySelector('img').naturalWidth")
        assert "planted spider bunch 7" in browser.evaluate(f"{spider}.innerText")
        browser.evaluate("window.notReloaded = 42")
        browser.evaluate("document.querySelector('button[data-reason=\"uninspected\"]').click()")
        assert browser.evaluate(f"{spider}.hidden") is True
        assert browser.evaluate("document.querySelector('article[data-bunch=\"8\"]').hidden") is False
        browser.evaluate("document.querySelector('button[data-reason=\"all\"]').click()")
        assert browser.evaluate(f"{spider}.hidden") is False
        plant(tmp_path, [decision(9, "spider", frame=30)])  # the daemon decides another bunch
        browser.wait_for("document.querySelectorAll('article.reject').length === 3")
        assert browser.evaluate("document.querySelector('article.reject').dataset.bunch") == "9"
        assert browser.evaluate("document.querySelector('article.reject').classList.contains('new')") is True
        assert browser.evaluate("window.notReloaded") == 42  # the page was updated in place
        keep_screenshot(browser.screenshot(tmp_path / "review-served.png"))


def test_static_page_from_replay_opens_from_files(tmp_path: Path) -> None:
    jsonl, _ = plant(tmp_path, [decision(3, "spider"), decision(4, "uninspected", score=0.0)], append=False)
    page = write_static_page(tmp_path, jsonl, source="footage.avi")
    assert "</script" not in page.read_text().split("const CONFIG", 1)[1].split("</script>", 1)[0]
    with Browser.launch(tmp_path) as browser:
        browser.navigate(page.as_uri())
        browser.wait_for("document.querySelectorAll('article.reject').length === 2")
        assert browser.wait_for("document.querySelector('article[data-bunch=\"3\"] img').naturalWidth > 0")
        browser.evaluate("document.querySelector('button[data-reason=\"spider\"]').click()")
        hidden = browser.evaluate("[...document.querySelectorAll('article.reject')].map(a => a.hidden)")
        assert hidden == [True, False]  # bunch 4 (uninspected, newest) hidden, bunch 3 shown
        assert "footage.avi" in browser.evaluate("document.getElementById('status').innerText")
        keep_screenshot(browser.screenshot(tmp_path / "review-static.png"))


def test_grafana_dashboard_links_the_review_page() -> None:
    dash = json.loads((Path(__file__).resolve().parents[1] / "deploy/grafana/inspector-dashboard.json").read_text())
    variable = next(v for v in dash["templating"]["list"] if v["name"] == "review")
    assert variable["query"] == "http://127.0.0.1:9109/review"  # the daemon's default review.address:review.port
    assert any(link["url"] == "${review}" for link in dash["links"])
    text = [p for p in dash["panels"] if p["type"] == "text"]
    assert text and "(${review})" in text[0]["options"]["content"]
