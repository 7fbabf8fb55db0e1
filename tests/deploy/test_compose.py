"""docker-compose.yml: parses, references files that exist, and its ports agree everywhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def test_services_and_scalable_agents() -> None:
    services = compose()["services"]
    assert {"scheduler", "coordinator", "agent", "prometheus", "grafana"} <= set(services)
    agent = services["agent"]
    assert "container_name" not in agent and "ports" not in agent, "agent must scale"
    assert "--shard auto/" in command_text(agent)


def test_build_files_and_bind_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} missing"


def test_ports_agree_between_commands_healthchecks_and_prometheus() -> None:
    services = compose()["services"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {job["job_name"]: job for job in scrape["scrape_configs"]}
    for name, grpc_port, metrics_port in (("scheduler", 50051, 9100), ("coordinator", 50052, 9101)):
        text = command_text(services[name])
        assert f"--port {grpc_port}" in text and f"--metrics-port {metrics_port}" in text
        assert f"127.0.0.1:{grpc_port}" in services[name]["healthcheck"]["test"]
        assert targets[name]["static_configs"][0]["targets"] == [f"{name}:{metrics_port}"]
    assert "--metrics-port 9102" in command_text(services["agent"])
    assert targets["agents"]["dns_sd_configs"][0] == {
        "names": ["agent"],
        "type": "A",
        "port": 9102,
        "refresh_interval": "15s",
    }
    assert "--scheduler scheduler:50051" in command_text(services["coordinator"])
    assert "--coordinator coordinator:50052" in command_text(services["agent"])


def test_runs_are_resumed_after_a_crash_and_never_restarted_once_finished() -> None:
    """The coordinator exits 0 only when its run finished: `on-failure` restarts a crashed or
    killed one (which resumes its run, as it is given no --new-run) and never a finished one.
    Agents exit 0 once training is over, so they are not restarted either."""
    services = compose()["services"]
    coordinator = services["coordinator"]
    text = command_text(coordinator)
    assert coordinator["restart"] == "on-failure"
    assert "--runs-dir /var/lib/lola-deft/runs" in text
    assert "--new-run" not in text and "--run-id" not in text
    assert "runs:/var/lib/lola-deft" in coordinator["volumes"]
    assert "runs" in compose()["volumes"]
    assert services["agent"]["restart"] == "on-failure"


def test_no_secret_is_baked_in() -> None:
    text = COMPOSE.read_text()
    assert re.search(r"GF_SECURITY_ADMIN_PASSWORD: \$\{GRAFANA_ADMIN_PASSWORD:\?", text)
    assert not re.search(
        r"(?i)(password|secret|token)\s*[:=]\s*['\"]?[a-z0-9]{4,}",
        text.replace("${GRAFANA_ADMIN_PASSWORD", ""),
    )


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (CI installs Debian's docker-compose)",
)
def test_docker_compose_validates_the_file() -> None:
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "only-for-validation"}
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"},
    )
    assert missing.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in missing.stderr


def test_dockerfiles_are_multi_stage_non_root_and_health_checked() -> None:
    for dockerfile in sorted((ROOT / "deploy/docker").glob("*.Dockerfile")):
        text = dockerfile.read_text()
        assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2, dockerfile.name
        users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
        assert users and users[-1] not in ("root", "0"), dockerfile.name
        assert "HEALTHCHECK" in text, dockerfile.name
        for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE):
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}"
        assert not re.search(r"(?i)^(ENV|ARG)\s+\S*(PASSWORD|SECRET|TOKEN)", text, re.MULTILINE)
    server = (ROOT / "deploy/docker/server.Dockerfile").read_text()
    assert '".[server]"' in server and 'deft", "health"' in server
    agent = (ROOT / "deploy/docker/agent.Dockerfile").read_text()
    assert '".[agent]"' in agent and "[server]" not in agent


def test_repository_paths_exist() -> None:
    for path in (
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/lola-deft.yml",
        "deploy/grafana/dashboards/lola-deft.json",
    ):
        assert (ROOT / path).is_file(), path
    assert Path(ROOT / "deploy/docker/jetson-agent.Dockerfile").is_file()


def test_every_grpc_link_is_mutual_tls_by_default() -> None:
    services = compose()["services"]
    certs = services["certs"]
    assert "deft certs init --out /certs" in " ".join(certs["command"])
    for name, role in (("scheduler", "scheduler"), ("coordinator", "coordinator")):
        text = command_text(services[name])
        assert f"--tls-cert /certs/{role}.pem" in text and "--tls-ca /certs/ca.pem" in text
        assert "--insecure" not in text
        assert "/certs/ca.pem" in services[name]["healthcheck"]["test"]
    made_first = services["scheduler"]["depends_on"]["certs"]["condition"]
    assert made_first == "service_completed_successfully"  # and the coordinator waits for it
    assert "--allowed-devices /certs/devices.txt" in command_text(services["coordinator"])
    assert "--insecure" not in command_text(services["agent"])
    assert "certs:/certs:ro" in services["agent"]["volumes"]
    # `docker compose run --rm certs-admin device ID`: deft certs' default --out is ./certs.
    admin = services["certs-admin"]
    assert str(Path(admin["working_dir"]) / "certs") == "/certs"
    assert "certs:/certs" in admin["volumes"]


def test_agent_replicas_claim_distinct_certificates_and_keep_them(tmp_path: Path) -> None:
    """The agent image's entry point, run with a stand-in `deft` that prints its arguments."""
    devices = tmp_path / "certs" / "devices"
    devices.mkdir(parents=True)
    (tmp_path / "certs" / "ca.pem").write_text("ca")
    for device in ("agent-1", "agent-2"):
        (devices / f"{device}.pem").write_text(device)
    claims = tmp_path / "claims"
    claims.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "deft").write_text('#!/bin/sh\necho "$@"\n')
    (bin_dir / "deft").chmod(0o755)
    script = ROOT / "deploy/docker/agent-entrypoint.sh"

    def start(owner: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "DEFT_CERTS": str(tmp_path / "certs"),
            "DEFT_CLAIMS": str(claims),
            "DEFT_CLAIM_OWNER": owner,
        }
        return subprocess.run(
            ["sh", str(script), "--metrics-port", "9102"], capture_output=True, text=True, env=env
        )

    first, second = start("replica-a"), start("replica-b")
    assert "--id agent-1 --tls-cert" in first.stdout and "--id agent-2" in second.stdout
    assert first.stdout.rstrip().endswith("--metrics-port 9102")
    assert "--id agent-1" in start("replica-a").stdout  # a restarted replica keeps its own
    third = start("replica-c")
    assert third.returncode == 2 and "every device certificate" in third.stderr


def test_only_the_coordinators_grpc_and_data_ports_are_published_beyond_the_host() -> None:
    published = {name: service.get("ports", []) for name, service in compose()["services"].items()}
    assert published["coordinator"] == ["50052:50052", "50053:50053"]
    assert "--data-port 50053" in command_text(compose()["services"]["coordinator"])
    for name, ports in published.items():
        if name != "coordinator":
            assert all(str(port).startswith("127.0.0.1:") for port in ports), (name, ports)


def test_every_documented_variable_is_read() -> None:
    text = COMPOSE.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    documented = set(re.findall(r"\bDEFT_[A-Z_]+", header))
    read = set(re.findall(r"\$\{(DEFT_[A-Z_]+)", body))
    assert documented and documented <= read, documented - read
    assert read <= documented, f"undocumented: {read - documented}"


def test_the_build_context_leaves_out_local_and_secret_files() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "certs", ".env", "bench-results", "deft-demo"} <= ignored
    for dockerfile in (ROOT / "deploy/docker").glob("*.Dockerfile"):
        for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile.read_text(), re.MULTILINE):
            assert source.split("/")[0] not in ignored, f"{dockerfile.name} copies {source}"


def test_dockerfiles_and_scripts_pass_their_linters() -> None:
    """hadolint on every Dockerfile, shellcheck on every shell script (both from the dev extra)."""
    bin_dir = Path(sys.executable).parent
    dockerfiles = sorted(str(p) for p in (ROOT / "deploy/docker").glob("*.Dockerfile"))
    scripts = sorted(str(p) for p in (ROOT / "deploy").rglob("*.sh"))
    assert len(dockerfiles) == 3 and len(scripts) >= 3
    hadolint = subprocess.run(
        [str(bin_dir / "hadolint"), "--failure-threshold", "info", *dockerfiles],
        capture_output=True,
        text=True,
    )
    assert hadolint.returncode == 0, hadolint.stdout + hadolint.stderr
    shellcheck = subprocess.run(
        [str(bin_dir / "shellcheck"), *scripts], capture_output=True, text=True
    )
    assert shellcheck.returncode == 0, shellcheck.stdout + shellcheck.stderr


def test_the_jetson_image_keeps_the_base_torch_and_uses_the_jetson_pins() -> None:
    text = (ROOT / "deploy/docker/jetson-agent.Dockerfile").read_text()
    assert "--system-site-packages" in text  # sees the base image's CUDA torch
    assert "pip install --no-deps -r constraints/jetson.txt" in text
    assert "pip install --no-deps ." in text
    installs = re.findall(r"pip install ([^\\\n]*)", text)
    assert installs and all("--no-deps" in line for line in installs), installs
    assert not re.search(r"pip install[^\n]*\btorch\b", text)
    assert "torch" not in {
        line.split("==")[0]
        for line in (ROOT / "constraints/jetson.txt").read_text().splitlines()
        if not line.startswith("#")
    }


def test_the_coordinator_reads_the_shipped_run_file() -> None:
    """compose mounts deploy/run.toml where the coordinator's --config points, and the file is
    one the coordinator accepts (every key and value checked as its flag is)."""
    from lola_deft.cli.main import parse

    coordinator = compose()["services"]["coordinator"]
    assert "--config /etc/lola-deft/run.toml" in command_text(coordinator)
    mounts = [v for v in coordinator["volumes"] if v.endswith(":/etc/lola-deft/run.toml:ro")]
    [mount] = mounts
    shipped = ROOT / mount.split(":-", 1)[1].split("}", 1)[0]
    assert shipped == ROOT / "deploy/run.toml"
    settings = parse(["coordinator", "serve", "--config", str(shipped)])
    assert (settings.task, settings.rounds, settings.policy) == ("sst2", 200, "jbba")
