"""Prometheus config, a real Prometheus server scraping a real coordinator, and the dashboard's
queries checked against the metrics the code really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from lola_deft.server.net import free_port
from tests.deploy.conftest import LiveSystem, scrape
from tests.helpers import ROOT

DASHBOARD = ROOT / "deploy/grafana/dashboards/lola-deft.json"


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (CI installs Debian's prometheus)",
)
def test_promtool_accepts_the_config() -> None:
    result = subprocess.run(
        ["promtool", "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (CI installs Debian's prometheus)",
)
def test_promtool_accepts_what_every_endpoint_exports(live_system: LiveSystem) -> None:
    """Base units, counter suffixes, help on every family: `promtool check metrics` (Prometheus'
    own linter) on the scheduler's, the coordinator's and an agent's /metrics after a round,
    which also carry the standard process_* and python_* metrics."""
    live_system.wait_for_rounds(1)
    for role, port in (
        ("scheduler", live_system.scheduler_metrics),
        ("coordinator", live_system.coordinator_metrics),
        ("agent", live_system.agent_metrics[0]),
    ):
        text = scrape(port)
        assert "process_resident_memory_bytes" in text and "python_info" in text, role
        result = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{role}: {result.stdout}{result.stderr}"


def test_a_request_cannot_choose_a_metric_label() -> None:
    from lola_deft.scheduler.policy_names import POLICY_HELP, known_policy

    assert known_policy("nonsense-policy") == "unknown"
    assert all(known_policy(name) == name for name in POLICY_HELP)


def exported_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
    return names


def test_every_dashboard_query_uses_an_exported_metric(live_system: LiveSystem) -> None:
    live_system.wait_for_rounds(1)
    exported = exported_names(scrape(live_system.coordinator_metrics))
    exported |= exported_names(scrape(live_system.scheduler_metrics))
    for port in live_system.agent_metrics:
        exported |= exported_names(scrape(port))
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bdeft_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"queried but never exported: {sorted(queried - exported)}"
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in (
        "round latency",
        "block",
        "bandwidth",
        "compute",
        "upload",
        "memory",
        "channel",
        "loss",
        "metric",
    ):
        assert topic in titles, topic


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not installed (CI installs Debian's prometheus)",
)
def test_a_real_prometheus_scrapes_the_coordinator(live_system: LiveSystem, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: coordinator\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{live_system.coordinator_metrics}']\n"
    )
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        live_system.wait_for_rounds(2)
        query = urllib.parse.quote("deft_round_latency_seconds")
        deadline = time.monotonic() + 60
        kinds: set[str] = set()
        while time.monotonic() < deadline and kinds != {"measured", "modelled"}:
            time.sleep(1)
            try:
                reply = json.loads(
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/v1/query?query={query}", timeout=5
                    ).read()
                )
            except OSError:
                continue
            assert reply["status"] == "success"
            kinds = {r["metric"]["kind"] for r in reply["data"]["result"]}
            values = [float(r["value"][1]) for r in reply["data"]["result"]]
        assert kinds == {"measured", "modelled"}, "Prometheus never returned the series"
        assert all(value > 0 for value in values)
    finally:
        server.terminate()
        server.wait(timeout=30)


def metric_kind(expr: str) -> str:
    """What a query measures, from its metric's name: queries of one kind share a unit."""
    [name, *_] = re.findall(r"\bdeft_[a-z_]+", expr)
    for marker, kind in (
        ("_seconds", "time"),
        ("_bytes", "bytes"),
        ("_hz", "frequency"),
        ("loss", "loss"),
        ("_total", "count"),
    ):
        if marker in name:
            return kind
    return name


def test_the_dashboard_imports_into_any_grafana() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["type"] for i in dashboard["__inputs"]] == ["datasource"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "device"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    for panel in dashboard["panels"]:
        sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert all(s["uid"] == "${datasource}" for s in sources), panel["title"]  # none fixed
        for target in panel["targets"]:
            expr = target["expr"]
            if re.search(r"deft_(device|agent)_", expr):
                assert 'device=~"$device"' in expr, expr
            if not re.search(r"deft_(agent_|scheduler_(requests|allocate|request_|last))", expr):
                assert 'instance=~"$instance"' in expr, expr


def test_every_dashboard_axis_has_one_unit() -> None:
    """Series of different kinds (seconds and requests, a score and a loss) never share an
    axis: an override gives the other kind its own unit and axis."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        config = panel["fieldConfig"]
        axes: dict[tuple[str, str], set[str]] = {}
        for target in panel["targets"]:
            unit, placement = config["defaults"].get("unit", "none"), "auto"
            for override in config["overrides"]:
                if override["matcher"]["options"] == target["refId"]:
                    values = {p["id"]: p["value"] for p in override["properties"]}
                    unit = values.get("unit", unit)
                    placement = values.get("custom.axisPlacement", placement)
            axes.setdefault((unit, placement), set()).add(metric_kind(target["expr"]))
        for axis, kinds in axes.items():
            assert len(kinds) == 1, f"{panel['title']}: {sorted(kinds)} share the axis {axis}"
