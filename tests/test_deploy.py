"""Deployment files: docker-compose.yml is valid and mounts what exists; the Dockerfile's
install steps, replayed in a fresh virtualenv, give a working ``batch-monitor``.

No Docker engine runs here, so the image is not built: the test copies what the Dockerfile
COPYs into a temporary build context and runs its RUN steps there with a fresh venv's python and
pip (pip's cache and PyPI serve the dependencies). This is slow (one venv per test session).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemonkit import free_port, http_get, wait_until

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_ENV = {
    "POSTGRES_PASSWORD": "test-postgres",
    "GRAFANA_POSTGRES_PASSWORD": "test-grafana-reader",
    "GRAFANA_ADMIN_PASSWORD": "test-admin",
}
REQUIRED = os.environ.get("MONITOR_REQUIRE_POSTGRES") == "1"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (apt-get install docker-compose)"
        if REQUIRED:
            pytest.fail(message + "; MONITOR_REQUIRE_POSTGRES=1 (CI) requires it", pytrace=False)
        pytest.skip("!!! SKIPPING DEPLOYMENT TESTS: " + message)
    return path


# --- docker-compose.yml --------------------------------------------------------------------


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    return subprocess.run(
        [need("docker-compose"), "-f", str(COMPOSE), *args],
        cwd=ROOT,
        env={**base, **(env if env is not None else COMPOSE_ENV)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load_compose() -> dict[str, Any]:
    """Parse docker-compose.yml with the YAML library docker-compose itself runs on."""
    exe = need("docker-compose")
    first = Path(exe).read_text(errors="replace").splitlines()[0]
    python = first[2:].strip().split()[0] if first.startswith("#!") else sys.executable
    proc = subprocess.run(
        [python, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=COMPOSE.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"cannot parse docker-compose.yml with {python}: {proc.stderr}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_compose_config_is_valid() -> None:
    proc = compose("config", "-q")
    assert proc.returncode == 0, proc.stderr
    for profile in ("demo", "live"):
        proc = compose("--profile", profile, "config", "--services")
        assert proc.returncode == 0, proc.stderr
        services = set(proc.stdout.split())
        assert {"db", "prometheus", "grafana"} <= services
        assert ({"simulator", "monitor-demo"} if profile == "demo" else {"monitor"}) <= services


@pytest.mark.parametrize("missing", sorted(COMPOSE_ENV))
def test_compose_requires_each_secret(missing: str) -> None:
    env = {k: v for k, v in COMPOSE_ENV.items() if k != missing}
    proc = compose("config", "-q", env=env)
    assert proc.returncode != 0
    assert f"set {missing}" in proc.stderr


def test_compose_mounts_exist_in_the_repo() -> None:
    data = load_compose()
    mounts = []
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                mounts.append((name, source))
    assert len(mounts) >= 4, mounts
    for name, source in mounts:
        assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
    grafana = data["services"]["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in data["services"]["prometheus"]["volumes"]
    # The demo simulator listens where the monitor can reach it.
    command = data["services"]["simulator"]["command"]
    assert command[:1] == ["simulate"] and "--host" in command and "0.0.0.0" in command
    assert "8765" in command
    demo_env = data["services"]["monitor-demo"]["environment"]
    assert demo_env["ANTHROPIC_BASE_URL"] == "http://simulator:8765"


# --- the Dockerfile -------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_layers_user_and_runtime() -> None:
    steps = instructions()
    kinds = [k for k, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    copies = [args for k, args in steps if k == "COPY"]
    assert copies[0] == "pyproject.toml ./", "dependencies install from pyproject.toml first"
    first_run = kinds.index("RUN")
    code_copy = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and "monitor" in a)
    assert first_run < code_copy, "dependencies must be a layer of their own, before the code"
    assert any(k == "RUN" and "pip install --no-deps ." in a for k, a in steps[code_copy:])
    user = next(a for k, a in steps if k == "USER")
    assert user not in ("root", "0")
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "MONITOR_DATABASE_URL=sqlite:////data/batch-monitor.db" in env
    assert "MONITOR_METRICS_HOST=0.0.0.0" in env
    assert ("VOLUME", '["/data"]') in steps
    health = next(a for k, a in steps if k == "HEALTHCHECK")
    assert "urllib.request" in health and "http://127.0.0.1:9464/healthz" in health
    assert "curl" not in health
    assert ("ENTRYPOINT", '["batch-monitor"]') in steps
    assert ("CMD", '["run", "--upgrade"]') in steps
    ignored = (ROOT / ".dockerignore").read_text()
    assert "!monitor/" in ignored and "!pyproject.toml" in ignored


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Replay the Dockerfile's COPY and RUN steps into a fresh venv; yield its bin directory.

    The build context holds only what the Dockerfile copies; ``/src`` (its WORKDIR) becomes
    the context and ``/tmp`` a private directory. Steps after ``USER`` (and useradd) are about
    the container, not the install, and are skipped.
    """
    base = tmp_path_factory.mktemp("image")
    context, scratch, env_dir = base / "src", base / "tmp", base / "venv"
    context.mkdir()
    scratch.mkdir()
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(env_dir),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for kind, args in instructions():
        if kind == "USER":
            break
        if kind == "COPY":
            *sources, _dest = shlex.split(args)
            for src in sources:
                if (ROOT / src).is_dir():
                    shutil.copytree(
                        ROOT / src, context / src, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(ROOT / src, context / src)
        elif kind == "RUN":
            if "useradd" in args:
                continue
            command = args.replace("/src", str(context)).replace("/tmp/", f"{scratch}/")
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=context,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert proc.returncode == 0, (
                f"RUN {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
    yield bin_dir


def run_installed(
    bin_dir: Path, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "ANTHROPIC_"))}
    base.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(bin_dir / "batch-monitor"), *args],
        cwd=cwd,
        env={**base, "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_installed_package_runs_outside_the_repo(image: Path, tmp_path: Path) -> None:
    # The installed package, not the checkout: import it from a directory outside the repo.
    proc = subprocess.run(
        [str(image / "python"), "-c", "import monitor; print(monitor.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(image.parent) in proc.stdout and str(ROOT) not in proc.stdout

    version = run_installed(image, tmp_path, "--version")
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout

    url = f"sqlite:///{tmp_path / 'data' / 'batch-monitor.db'}"
    (tmp_path / "data").mkdir()
    upgrade = run_installed(image, tmp_path, "db", "upgrade", MONITOR_DATABASE_URL=url)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "upgraded" in upgrade.stdout or "up to date" in upgrade.stdout
    status = run_installed(image, tmp_path, "db", "status", MONITOR_DATABASE_URL=url)
    assert status.returncode == 0, status.stdout + status.stderr

    check = run_installed(
        image,
        tmp_path,
        "config",
        "check",
        "--json",
        MONITOR_DATABASE_URL=url,
        MONITOR_METRICS_HOST="0.0.0.0",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    effective = json.loads(check.stdout)
    assert effective["metrics"]["host"] == "0.0.0.0"
    # The image's CMD, once: every due job runs against the migrated store and exits 0.
    once = run_installed(image, tmp_path, "run", "--once", MONITOR_DATABASE_URL=url)
    assert once.returncode == 0, once.stdout + once.stderr
    assert "evaluate: ok" in once.stdout and "prune: ok" in once.stdout
    # And serving, as the HEALTHCHECK sees it.
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "ANTHROPIC_"))}
    proc = subprocess.Popen(
        [str(image / "batch-monitor"), "run", "--upgrade"],
        cwd=tmp_path,
        env={**base, "MONITOR_DATABASE_URL": url, "MONITOR_METRICS_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60, "/healthz")
    finally:
        proc.terminate()
        assert proc.wait(timeout=40) == 0
