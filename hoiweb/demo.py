"""``make demo``: the whole product on an embedded default, through the real queue.

Starts (or reuses) PostgreSQL and Redis, migrates, creates the demo user, generates a small synthetic
HOI video, starts one RQ worker and the web server, launches a reconstruction of that video and prints
the URL to watch it. Idempotent: a second run reuses the data in ``var/``. Ctrl-C stops exactly the
processes this run started (and the embedded servers, when it started them).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hoiweb import devservices

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_USER = "demo"
DEMO_VIDEO = "Demo/mug/mug_normal_s0_000"  # what reconstruction.synth names seed 0, video 0


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _persistent_secret(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


class Demo:
    def __init__(self, host: str, port: int, var_dir: Path, num_frames: int):
        self.host, self.port, self.var_dir, self.num_frames = host, port, var_dir, num_frames
        self.children: list[subprocess.Popen] = []
        self.started_embedded = False
        self.env = dict(os.environ)

    # ---- steps ------------------------------------------------------------------------------------
    def services(self) -> None:
        had_urls = bool(os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))
        urls = devservices.up("embedded")
        self.started_embedded = not had_urls
        self.env.update(urls)
        self.env.update(
            {
                "DEBUG": self.env.get("DEBUG", "1"),
                "SECRET_KEY": self.env.get("SECRET_KEY") or _persistent_secret(self.var_dir / "secret_key"),
                "RESULTS_DIR": self.env.get("RESULTS_DIR", str(self.var_dir / "results")),
                "MEDIA_ROOT": self.env.get("MEDIA_ROOT", str(self.var_dir / "media")),
                "PYTHONPATH": str(BASE_DIR),
                "PYTHONUNBUFFERED": "1",
            }
        )
        _say(f"PostgreSQL: {urls['DATABASE_URL']}")
        _say(f"Redis:      {urls['REDIS_URL']}")

    def manage(self, *args: str, check: bool = True, extra_env: dict[str, str] | None = None) -> int:
        env = dict(self.env, **(extra_env or {}))
        proc = subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], env=env, cwd=BASE_DIR)
        if check and proc.returncode != 0:
            raise SystemExit(f"[demo] manage.py {' '.join(args)} failed (exit {proc.returncode})")
        return proc.returncode

    def database(self) -> str:
        self.manage("migrate", "--noinput", "-v", "0")
        password_file = self.var_dir / "demo_password"
        password = _persistent_secret(password_file)[:16]
        code = (
            "from django.contrib.auth import get_user_model; U = get_user_model(); "
            f"u, _ = U.objects.get_or_create(username={DEMO_USER!r}); "
            "u.is_staff = True; u.is_superuser = True; "
            f"u.set_password({password!r}); u.save()"
        )
        self.manage("shell", "-c", code)
        return password

    def synthetic_video(self) -> None:
        results = Path(self.env["RESULTS_DIR"])
        dataset, category, name = DEMO_VIDEO.split("/")
        if (results / "generation" / "videos_kling" / dataset / category / f"{name}.mp4").exists():
            _say(f"synthetic video {DEMO_VIDEO} already generated")
            return
        if not _has_module("reconstruction.synth.__main__"):
            _say("synthetic scene generator not available in this checkout: skipping video generation")
            return
        _say(f"generating synthetic video {DEMO_VIDEO} ({self.num_frames} frames)")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "reconstruction.synth",
                "--results_dir",
                str(results),
                "--dataset",
                dataset,
                "--category",
                category,
                "--num_videos",
                "1",
                "--num_frames",
                str(self.num_frames),
                "--seed",
                "0",
                "--width",
                "320",
                "--height",
                "240",
            ],  # fmt: skip
            env=self.env,
            cwd=BASE_DIR,
            check=True,
        )

    def spawn(self, label: str, *argv: str) -> subprocess.Popen:
        log_path = self.var_dir / "logs" / f"{label}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        proc = subprocess.Popen(
            argv, env=self.env, cwd=BASE_DIR, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append(proc)
        _say(f"started {label} (pid {proc.pid}, log {log_path})")
        return proc

    def worker(self) -> None:
        if not _has_module("workers.__main__"):
            _say("RQ worker entry point not available in this checkout: no worker started")
            return
        self.spawn("worker-gpu0", sys.executable, "-m", "workers", "--gpu", "0")

    def web(self) -> str:
        if devservices.port_open(self.port, self.host):
            raise SystemExit(f"[demo] port {self.port} is in use: stop what uses it or set HOIWEB_PORT / --port")
        self.spawn(
            "web", sys.executable, str(BASE_DIR / "manage.py"), "runserver", f"{self.host}:{self.port}", "--noreload"
        )
        url = f"http://{self.host}:{self.port}/"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "accounts/login/", timeout=2) as response:
                    if response.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"[demo] web server did not come up; see {self.var_dir / 'logs' / 'web.log'}")

    def launch(self) -> None:
        results = Path(self.env["RESULTS_DIR"])
        if not (results / "generation" / "videos_kling").exists():
            _say("no video to reconstruct yet: nothing launched")
            return
        if self.manage("help", "launch_run", check=False, extra_env={"DJANGO_COLORS": "nocolor"}) != 0:
            _say("launch command not available in this checkout: nothing launched")
            return
        self.manage("register_results_dir", str(results))
        # The embedded Redis keeps nothing across restarts: PostgreSQL is the truth, re-enqueue from it.
        self.manage("reconcile")
        self.manage("launch_run", "--video-id", DEMO_VIDEO, "--if-not-done")

    # ---- lifecycle --------------------------------------------------------------------------------
    def stop(self) -> None:
        for proc in reversed(self.children):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.children:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.started_embedded:
            devservices.stop_embedded_redis()
            devservices.stop_embedded_postgres()
        _say("stopped everything this demo started")

    def run(self) -> int:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.services()
            password = self.database()
            self.synthetic_video()
            self.worker()
            url = self.web()
            self.launch()
            _say(f"dashboard: {url}   user: {DEMO_USER}   password: {password}")
            _say("press Ctrl-C to stop")
            while all(proc.poll() is None for proc in self.children):
                time.sleep(1)
            _say("a child process exited; stopping")
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            # a second Ctrl-C (make forwards one too) must not cut the shutdown short with a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hoiweb.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("HOIWEB_PORT", "8000")))
    parser.add_argument("--frames", type=int, default=32, help="frames of the synthetic demo video (320x240)")
    args = parser.parse_args(argv)
    # Ctrl-C must work even when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    return Demo(args.host, args.port, devservices.VAR_DIR, args.frames).run()


if __name__ == "__main__":
    sys.exit(main())
