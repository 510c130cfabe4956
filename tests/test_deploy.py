"""deploy/: the systemd unit verifies, install.sh lays out a prefix idempotently, the example config validates and
documents every key, Prometheus rules check, and every metric named in rules and dashboard exists."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from inspector.cli import main as cli_main
from inspector.config import Config, load_config
from inspector.errors import ConfigError
from inspector.metrics import INTERFACE_METRIC_NAMES

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "inspector.service"
RULES = DEPLOY / "prometheus" / "inspector-alerts.yml"
GATEWAY_RULES = DEPLOY / "prometheus" / "gateway-alerts.yml"
SCRAPE = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "inspector-dashboard.json"

INTERFACE_METRICS = INTERFACE_METRIC_NAMES
METRIC_RE = re.compile(r"\binspector_[a-z0-9_]+")


# ------------------------------------------------------------------------------------------------ systemd unit
def _unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_has_the_required_hardening() -> None:
    s = _unit_settings(UNIT)
    expect = {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "User": "inspector",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "DevicePolicy": "closed",
        "DeviceAllow": "char-video4linux rw",
        "SupplementaryGroups": "video",
        "ReadWritePaths": "/var/lib/inspector",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "ExecStartPre": "/opt/inspector/venv/bin/inspector check-config /etc/inspector/config.yaml",
        "ExecStart": "/opt/inspector/venv/bin/inspector run --config /etc/inspector/config.yaml",
    }
    for key, value in expect.items():
        assert s.get(key) == [value], (key, s.get(key))
    for unit in (UNIT, DEPLOY / "inspector@.service"):  # resources and reach, both units
        u = _unit_settings(unit)
        assert u.get("SystemCallFilter") == ["@system-service"], unit
        assert u.get("IPAddressDeny") == ["any"] and u.get("IPAddressAllow") == ["localhost"], unit
        assert u["MemoryMax"][0].endswith("G") and 0 < int(u["TasksMax"][0]) <= 1024, unit
    assert int(s["WatchdogSec"][0]) > 0
    assert int(s["StartLimitBurst"][0]) > 0 and int(s["StartLimitIntervalSec"][0]) > 0


def need_tool(name: str, package: str) -> None:
    """Skip a test whose checker is not installed, on a developer's machine; under CI (CI=true, set by .ci/run) a
    missing checker fails the test instead, so a check that never ran cannot pass as green."""
    if shutil.which(name) is not None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{name} is not installed (Debian package {package}) but CI=true: .ci/run must install it")
    pytest.skip(f"{name} not installed (Debian package {package})")


def _verify(unit_text: str, tmp_path: Path, name: str = "inspector.service") -> str:
    """systemd-analyze verify on a copy whose ExecStart binaries exist (/bin/true): any message is a failure."""
    text = unit_text.replace("/opt/inspector/venv/bin/inspector", shutil.which("true") or "/bin/true")
    path = tmp_path / name
    path.write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return (proc.stdout + proc.stderr).strip() + ("" if proc.returncode == 0 else f"\nrc={proc.returncode}")


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    need_tool("systemd-analyze", "systemd")
    assert _verify(UNIT.read_text(), tmp_path) == ""
    # with the GPU drop-in merged in (systemd merges repeated sections)
    merged = UNIT.read_text() + "\n" + (DEPLOY / "gpu.conf").read_text()
    assert _verify(merged, tmp_path) == ""
    # the check can fail: a misspelt key is reported
    assert "Unknown key" in _verify(UNIT.read_text().replace("PrivateTmp=", "PrivateTemp="), tmp_path)
    # the original only lacks the installed binary
    proc = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, check=False)
    for line in (proc.stdout + proc.stderr).strip().splitlines():
        assert "/opt/inspector/venv/bin/inspector is not executable" in line, line


# ------------------------------------------------------------------------------------------------ install.sh
def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_install_into_prefix_is_idempotent_and_keeps_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = _install("--prefix", str(root), "--no-venv", "--gpu")
    assert proc.returncode == 0, proc.stderr
    config = root / "etc/inspector/config.yaml"
    assert config.read_text() == (DEPLOY / "config.example.yaml").read_text()
    assert (root / "etc/systemd/system/inspector.service").read_text() == UNIT.read_text()
    assert (root / "etc/systemd/system/inspector.service.d/gpu.conf").is_file()
    assert (root / "var/lib/inspector/recordings").is_dir()
    assert not (root / "etc/inspector/calibration.yaml").exists()  # deploy/calibration.yaml is an example only
    link = root / "usr/local/bin/inspector"
    assert link.is_symlink() and str(link.readlink()) == "/opt/inspector/venv/bin/inspector"
    assert "not creating the user" in proc.stdout
    # a second run (now CPU) keeps the edited config and drops the GPU drop-in
    config.write_text("# edited on the line\n")
    proc = _install("--prefix", str(root), "--no-venv", "--cpu")
    assert proc.returncode == 0, proc.stderr
    assert config.read_text() == "# edited on the line\n"
    assert "keeping existing" in proc.stdout
    assert not (root / "etc/systemd/system/inspector.service.d/gpu.conf").exists()
    # uninstall keeps config and data; --purge removes them
    assert _install("--prefix", str(root), "--uninstall").returncode == 0
    assert not (root / "etc/systemd/system/inspector.service").exists() and not link.is_symlink()
    assert config.is_file() and (root / "var/lib/inspector").is_dir()
    assert _install("--prefix", str(root), "--uninstall", "--purge").returncode == 0
    assert not (root / "etc/inspector").exists() and not (root / "var/lib/inspector").exists()


@pytest.mark.parametrize(
    ("flag", "package", "other"), [("--cpu", "[cpu]", "onnxruntime-gpu"), ("--gpu", "[gpu]", "onnxruntime")]
)
def test_install_dry_run_changes_nothing_and_picks_the_extra(
    tmp_path: Path, flag: str, package: str, other: str
) -> None:
    root = tmp_path / "root"
    proc = _install("--prefix", str(root), "--dry-run", flag)
    assert proc.returncode == 0, proc.stderr
    assert not root.exists()
    lines = proc.stdout.splitlines()
    assert any(line.startswith("+ python3 -m venv") for line in lines)
    assert any(line.startswith("+ ") and line.endswith(package) and "pip install" in line for line in lines)
    assert any(f"pip uninstall --quiet --yes {other}" in line for line in lines)


def test_install_allow_ip_adds_a_network_drop_in_that_verifies(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = _install("--prefix", str(root), "--no-venv", "--allow-ip", "10.1.2.0/24", "--allow-ip", "192.168.5.7")
    assert proc.returncode == 0, proc.stderr
    units = root / "etc/systemd/system"
    for unit in ("inspector.service", "inspector@.service"):
        drop_in = units / f"{unit}.d" / "network.conf"
        assert "IPAddressAllow=10.1.2.0/24 192.168.5.7" in drop_in.read_text().splitlines()
    if shutil.which("systemd-analyze") is not None:  # the unit with the drop-in merged in still verifies
        merged = UNIT.read_text() + "\n" + (units / "inspector.service.d" / "network.conf").read_text()
        assert _verify(merged, tmp_path) == ""
    # a run without it goes back to loopback only; a bad address is refused
    assert _install("--prefix", str(root), "--no-venv").returncode == 0
    assert not (units / "inspector.service.d" / "network.conf").exists()
    proc = _install("--prefix", str(root), "--no-venv", "--allow-ip", "plc.local")
    assert proc.returncode == 2 and "not an IP address" in proc.stderr


def test_install_rejects_unknown_options() -> None:
    proc = _install("--frobnicate")
    assert proc.returncode == 2 and "unknown option" in proc.stderr


# ------------------------------------------------------------------------------------------------ config example
def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        ann = field.annotation
        if get_origin(ann) is list:  # a list of sections: its items' keys
            ann = get_args(ann)[0]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_fields(ann, prefix + name + "."))
    return out


def test_config_example_validates(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "config.example.yaml", tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="inspector calibrate"):  # not calibrated yet: clear message
        load_config(tmp_path / "config.yaml")
    shutil.copy(ROOT / "calibration" / "example-line1.yaml", tmp_path / "calibration.yaml")
    config = load_config(tmp_path / "config.yaml")
    assert config.source.kind == "camera" and config.model.path.name == "demo.onnx"


# daemon configs and calibration files (the gateway's example is checked by tests/test_gateway.py)
SHIPPED_EXAMPLES = sorted(
    [*(p for p in DEPLOY.glob("*.yaml") if not p.name.startswith("gateway")), *(ROOT / "calibration").glob("*.yaml")]
)


def test_every_shipped_example_is_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SHIPPED_EXAMPLES}
    assert {"deploy/config.example.yaml", "deploy/calibration.yaml", "calibration/example-line1.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED_EXAMPLES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shipped_example_checks_clean_from_any_folder(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths inside resolve against the file's folder, not the working one
    calibration = "calibration" in path.name or path.parent.name == "calibration"
    argv = ["check-config", *(["--calibration"] if calibration else []), str(path)]
    status = cli_main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out.strip() == f"{path}: OK"


def undocumented_keys(path: Path, model: type[BaseModel]) -> list[str]:
    """Keys of ``model`` that an example config does not show, and key lines without a comment (on the line or
    the line above), each as a message."""
    text = path.read_text()
    missing = []
    for dotted in _fields(model):
        key = dotted.rsplit(".", 1)[-1]
        if re.search(rf"^\s*#?\s*-?\s*{re.escape(key)}:.*$", text, re.MULTILINE) is None:
            missing.append(f"{path.name} lacks {dotted}")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s+#?\s*([a-z_]+):\s*\S", line)
        if m and "#" not in line.split(":", 1)[1] and not lines[i - 1].strip().startswith("#"):
            missing.append(f"{path.name}:{i + 1}: key {m.group(1)} has no comment")
    return missing


def test_config_example_documents_every_key() -> None:
    assert undocumented_keys(DEPLOY / "config.example.yaml", Config) == []


# ------------------------------------------------------------------------------------------------ prometheus
def test_rules_and_scrape_config_parse() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    for name in (
        "InspectorDown",
        "InspectorFpsBelowBeltNeed",
        "InspectorUninspectedBunches",
        "InspectorRejectMissed",
        "InspectorControllerHeartbeatLost",
        "InspectorCameraDown",
        "InspectorModelOnCpu",
    ):
        assert name in alerts
    scrape = yaml.safe_load(SCRAPE.read_text())
    assert scrape["scrape_configs"][0]["job_name"] == "inspector"
    assert "inspector-alerts.yml" in scrape["rule_files"]


def test_promtool_checks(tmp_path: Path) -> None:
    need_tool("promtool", "prometheus")
    # every dashboard query is PromQL promtool accepts (Grafana's $line as a match-all regex)
    queries = tmp_path / "dashboard-queries.yml"
    exprs = [e for e in _dashboard_exprs() + _dashboard_exprs(gateway=True) if not e.startswith("label_values(")]
    rules = [{"record": f"dashboard:query{i}", "expr": e.replace("$line", ".*")} for i, e in enumerate(exprs)]
    queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    for argv in (
        ["check", "rules", str(RULES)],
        ["check", "rules", str(GATEWAY_RULES)],
        ["check", "rules", str(queries)],
        ["check", "config", str(SCRAPE)],
        ["test", "rules", "alerts-test.yml"],
        ["test", "rules", "gateway-alerts-test.yml"],
    ):
        proc = subprocess.run(
            ["promtool", *argv], capture_output=True, text=True, timeout=60, check=False, cwd=RULES.parent
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("increase(inspector_rejects_missed_total[5m])", "increase(("))
    proc = subprocess.run(["promtool", "check", "rules", str(broken)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0


# ------------------------------------------------------------------------------------------------ metric names
def _exposed_sample_names(registry: Any = None) -> set[str]:
    """Every sample name a registry (default: the daemon's) can expose, from the text exposition's TYPE lines."""
    metrics_mod = pytest.importorskip("inspector.metrics")
    from prometheus_client import generate_latest

    text = generate_latest(registry if registry is not None else metrics_mod.Metrics().registry).decode()
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        if kind == "summary":
            names.update({f"{name}_sum", f"{name}_count"})
    return names


def _dashboard_exprs(gateway: bool = False) -> list[str]:
    """The queries of the dashboard on the daemon's metrics, or (``gateway``) on the gateway's
    (``inspector_gateway_*``, its own registry and scrape job)."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            exprs.append(q["query"])
    return [e for e in exprs if ("inspector_gateway_" in e) == gateway]


def _rule_exprs(rules: Path = RULES) -> list[str]:
    return [r["expr"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]]


def _families(registry: Any) -> set[str]:
    """Metric family names as queried: counters with their ``_total``, Info with ``_info``."""
    suffix = {"counter": "_total", "info": "_info"}
    return {m.name + suffix.get(m.type, "") for m in registry.collect()}


def test_every_metric_in_dashboard_and_rules_exists() -> None:
    from inspector.gateway import GatewayMetrics

    daemon, gateway = _exposed_sample_names(), _exposed_sample_names(GatewayMetrics().registry)
    for where, exprs, exposed in (
        ("dashboard", _dashboard_exprs(), daemon),
        ("dashboard (gateway)", _dashboard_exprs(gateway=True), gateway),
        ("alert rules", _rule_exprs(), daemon),
        ("gateway alert rules", _rule_exprs(GATEWAY_RULES), gateway),
    ):
        used = {m for e in exprs for m in METRIC_RE.findall(e)}
        assert used, where
        unknown = sorted(used - exposed)
        assert not unknown, f"{where} uses metrics the {where.split()[-1]} does not expose: {unknown}"


def test_every_exported_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    """A counter of a fail-safe path nobody looks at is a miss nobody sees: every family the daemon and the gateway
    export is queried by some panel or alert rule."""
    from prometheus_client import CollectorRegistry

    from inspector.gateway import GatewayMetrics
    from inspector.metrics import Metrics

    exprs = _dashboard_exprs() + _dashboard_exprs(gateway=True) + _rule_exprs() + _rule_exprs(GATEWAY_RULES)
    used = {m for e in exprs for m in METRIC_RE.findall(e)}
    families = _families(Metrics(CollectorRegistry()).registry) | _families(GatewayMetrics().registry)
    assert len(families) > 60
    unseen = sorted(f for f in families if f not in used and not any(u.startswith(f + "_") for u in used))
    assert not unseen, f"exported but on no dashboard panel and in no alert rule: {unseen}"


def test_every_dashboard_panel_says_what_it_shows_in_which_unit_and_when_to_worry() -> None:
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] not in ("row", "text")]
    assert len(panels) > 30
    for p in panels:
        defaults = p["fieldConfig"]["defaults"]
        assert len(p.get("description", "")) > 40, p["title"]
        assert defaults.get("unit"), p["title"]
        steps = defaults.get("thresholds", {}).get("steps", [])
        assert steps and steps[0]["value"] is None, p["title"]  # the base colour, then the limits
        assert all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
    y = {p["id"]: p["gridPos"]["y"] for p in dash["panels"]}
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    assert sorted(y.values()) == [p["gridPos"]["y"] for p in dash["panels"]]  # in reading order
    cells = [
        (p["title"], (r, c))
        for p in dash["panels"]
        for g in [p["gridPos"]]
        for r in range(g["y"], g["y"] + g["h"])
        for c in range(g["x"], g["x"] + g["w"])
    ]
    assert all(0 <= c < 24 for _, (_, c) in cells)
    taken: dict[tuple[int, int], str] = {}
    for title, cell in cells:
        assert taken.setdefault(cell, title) == title, f"{title} overlaps {taken[cell]}"
    assert rows[0]["gridPos"]["y"] == 0


# ------------------------------------------------------------------------------------------------ alert rules
def _alerts(rules: Path) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if "alert" in r}


@pytest.mark.parametrize("rules, unit_tests", [(RULES, "alerts-test.yml"), (GATEWAY_RULES, "gateway-alerts-test.yml")])
def test_every_alert_is_unit_tested_firing_and_quiet_and_says_what_to_do(rules: Path, unit_tests: str) -> None:
    alerts = _alerts(rules)
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load((rules.parent / unit_tests).read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert sorted(set(alerts) - firing) == [], f"{unit_tests}: never seen firing"
    assert sorted(set(alerts) - quiet) == [], f"{unit_tests}: never seen quiet"
    assert not (firing | quiet) - set(alerts)
    for name, rule in alerts.items():
        notes = rule["annotations"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        # what happened, what the line does meanwhile, what to check first
        assert notes["summary"] and "Meanwhile:" in notes["description"] and "Check" in notes["description"], name


def test_the_operations_guide_lists_every_alert() -> None:
    guide = (ROOT / "docs" / "OPERATIONS.md").read_text()
    table = {row.split("|")[1].strip(" `") for row in guide.splitlines() if row.startswith("| `Inspector")}
    assert table == set(_alerts(RULES)) | set(_alerts(GATEWAY_RULES))


def test_design_metrics_are_exposed_and_each_has_a_dashboard_panel() -> None:
    exposed = _exposed_sample_names()
    assert not [m for m in INTERFACE_METRICS if m not in exposed]
    dash = json.loads(DASHBOARD.read_text())
    per_panel = [{m for t in p.get("targets", []) for m in METRIC_RE.findall(t["expr"])} for p in dash["panels"]]
    for metric in INTERFACE_METRICS:
        assert any(metric in used or any(u.startswith(metric + "_") for u in used) for used in per_panel), (
            f"no dashboard panel shows {metric}"
        )
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_architecture_metric_list_matches_the_declared_interface() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Metrics", 1)[1].split("##", 1)[0]
    listed = set(METRIC_RE.findall(section))
    assert listed == set(INTERFACE_METRICS)


def _walk(obj: Any) -> list[Any]:
    out = [obj]
    if isinstance(obj, dict):
        for v in obj.values():
            out.extend(_walk(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_walk(v))
    return out


def test_dashboard_panels_use_the_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    for node in _walk(dash):
        if isinstance(node, dict) and "datasource" in node and isinstance(node["datasource"], dict):
            assert node["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("ci, outcome", [("true", "failed"), ("", "skipped")])
def test_a_missing_checker_fails_under_ci_and_skips_elsewhere(
    ci: str, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PATH", "")  # no checker can be found
    kind = pytest.fail.Exception if outcome == "failed" else pytest.skip.Exception
    with pytest.raises(kind, match="promtool"):
        need_tool("promtool", "prometheus")
