"""Project foundation: settings from the environment, embedded services, docker-compose, the demo command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"}}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _django_setup(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'hoiweb.settings'); django.setup()"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"DEBUG": "0", "DATABASE_URL": "postgresql://x@127.0.0.1/x", "REDIS_URL": "redis://127.0.0.1"}, "SECRET_KEY"),
        ({"DEBUG": "1", "REDIS_URL": "redis://127.0.0.1"}, "DATABASE_URL"),
        ({"DEBUG": "1", "DATABASE_URL": "postgresql://x@127.0.0.1/x"}, "REDIS_URL"),
    ],
)
def test_missing_required_setting_is_named(env, missing):
    result = _django_setup(_clean_env(**env))
    assert result.returncode != 0
    assert f"setting {missing} is required" in result.stderr


def test_non_postgres_database_url_is_rejected():
    result = _django_setup(_clean_env(DEBUG="1", DATABASE_URL="sqlite:///x.db", REDIS_URL="redis://127.0.0.1"))
    assert result.returncode != 0
    assert "DATABASE_URL must be a postgresql:// URL" in result.stderr


def test_settings_load_with_everything_set():
    result = _django_setup(
        _clean_env(DEBUG="0", SECRET_KEY="k", DATABASE_URL="postgresql://x@h/db", REDIS_URL="redis://h")
    )
    assert result.returncode == 0, result.stderr


def test_docker_compose_wiring():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web"} <= set(services)
    workers = {name: svc for name, svc in services.items() if name.startswith("worker-gpu-")}
    assert len(workers) >= 1
    assert set(compose["volumes"]) >= {"postgres-data", "hoiweb-data"}
    for name, svc in {"web": services["web"], **workers}.items():
        env = svc["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"], name
        assert env["REDIS_URL"].startswith("redis://redis:"), name
        assert env["RESULTS_DIR"].startswith("/data"), name
        assert any(v.startswith("hoiweb-data:/data") for v in svc["volumes"]), name
        assert set(svc["depends_on"]) >= {"postgres", "redis"}, name
    assert "gunicorn" in services["web"]["command"]
    for name, svc in workers.items():
        gpu = name.rsplit("-", 1)[1]
        assert svc["command"] == ["python", "-m", "workers", "--gpu", gpu]
        assert svc["environment"]["CUDA_VISIBLE_DEVICES"] == gpu
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["device_ids"] == [gpu] and "gpu" in device["capabilities"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_embedded_services_start_and_stop(tmp_path):
    env = _clean_env(HOIWEB_VAR_DIR=str(tmp_path / "var"))
    out = subprocess.run(
        [sys.executable, "-m", "hoiweb.devservices", "up", "--mode", "embedded"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    urls = dict(line.removeprefix("export ").replace("'", "").split("=", 1) for line in out.stdout.splitlines())
    try:
        assert str(tmp_path) in urls["DATABASE_URL"] and str(tmp_path) in urls["REDIS_URL"]
        with psycopg.connect(urls["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "hoiweb"
        client = redis.Redis.from_url(urls["REDIS_URL"])
        client.set("probe", "1")
        assert client.get("probe") == b"1"
    finally:
        subprocess.run([sys.executable, "-m", "hoiweb.devservices", "down"], env=env, cwd=ROOT, check=True, timeout=60)
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(urls["REDIS_URL"], socket_connect_timeout=1).ping()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(urls["DATABASE_URL"], connect_timeout=2)


@pytest.mark.slow
def test_demo_command_serves_login_page_and_stops_what_it_started(tmp_path):
    """The README's demo command on embedded services: real login page over HTTP, clean Ctrl-C."""
    port = _free_port()
    env = _clean_env(HOIWEB_VAR_DIR=str(tmp_path / "var"), HOIWEB_PORT=str(port))
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "hoiweb.demo", "--frames", "8"], env=env, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while "dashboard: http" not in log_path.read_text():
            assert demo.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(1)
        page = subprocess.run(
            ["curl", "-sf", f"http://127.0.0.1:{port}/accounts/login/"], capture_output=True, text=True, timeout=30
        )
        assert page.returncode == 0
        assert 'name="password"' in page.stdout and "csrfmiddlewaretoken" in page.stdout
        child_pids = [
            int(line.split("pid ")[1].split(",")[0]) for line in log_path.read_text().splitlines() if "(pid " in line
        ]
        assert child_pids, log_path.read_text()
    finally:
        os.killpg(demo.pid, signal.SIGINT) if demo.poll() is None else None
        demo.wait(timeout=60)
    text = log_path.read_text()
    assert "stopped everything this demo started" in text
    for pid in child_pids:
        assert not _alive(pid), f"child {pid} still running"
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(f"unix://{tmp_path}/var/redis/redis.sock", socket_connect_timeout=1).ping()
