"""``python -m workers --gpu N [--queues gpu,cpu] [--burst]``: one RQ worker pinned to one GPU.

Pins the GPU with CUDA_VISIBLE_DEVICES before anything imports torch, preloads the engine's models once
(RQ's SimpleWorker runs jobs in this process, so they stay loaded across jobs), registers a heartbeat row
and runs the worker. Several workers on several hosts share Redis, PostgreSQL and the results storage.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading

log = logging.getLogger("workers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="0", help="GPU index to pin (CUDA_VISIBLE_DEVICES), or 'cpu'")
    parser.add_argument("--queues", default="gpu,cpu", help="comma-separated RQ queues, highest priority first")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--name", default="", help="worker name (default <host>-gpu<N>-<pid>)")
    parser.add_argument("--no-preload", action="store_true", help="do not load the engine's models at start")
    parser.add_argument(
        "--setup",
        default=os.environ.get("HOIWEB_WORKER_SETUP", ""),
        help="module:function called once at start (e.g. to register custom stages or backends)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.gpu == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ.setdefault("HOIWEB_DEVICE", "cpu")
    else:
        if not args.gpu.isdigit():
            print(f"--gpu must be a GPU index or 'cpu', got {args.gpu!r}", file=sys.stderr)
            return 2
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    os.environ["HOIWEB_WORKER_GPU"] = args.gpu
    name = args.name or f"{socket.gethostname()}-gpu{args.gpu}-{os.getpid()}"
    os.environ["HOIWEB_WORKER_NAME"] = name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hoiweb.settings")

    import django

    django.setup()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import django_rq
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone
    from rq.worker import SimpleWorker

    from hoiweb.models import StageJob, WorkerHeartbeat

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = [q for q in queues if q not in settings.RQ_QUEUES]
    if unknown:
        print(f"unknown queue(s) {unknown}; configured: {sorted(settings.RQ_QUEUES)}", file=sys.stderr)
        return 2

    if args.setup:
        run_setup_hook(args.setup)
    if not args.no_preload:
        preload_engine()

    WorkerHeartbeat.objects.update_or_create(
        name=name,
        defaults={"hostname": socket.gethostname(), "pid": os.getpid(), "gpu": args.gpu, "queues": ",".join(queues),
                  "started_at": timezone.now(), "last_seen": timezone.now(), "stopped_at": None, "current_job": None},
    )  # fmt: skip
    stop = threading.Event()

    def beat() -> None:
        # Liveness of this process, and detection of other workers' deaths (any live worker reaps).
        try:
            while not stop.wait(settings.HEARTBEAT_SECONDS):
                WorkerHeartbeat.objects.filter(name=name).update(last_seen=timezone.now())
                StageJob.reap_dead(exclude_worker=name)
        finally:
            connection.close()

    threading.Thread(target=beat, daemon=True, name="worker-heartbeat").start()
    worker = SimpleWorker(
        [django_rq.get_queue(q) for q in queues], name=name, connection=django_rq.get_connection(queues[0])
    )
    log.info("worker %s listening on %s (gpu %s)", name, ",".join(queues), args.gpu)
    try:
        worker.work(burst=args.burst, logging_level="INFO", with_scheduler=False)
    finally:
        stop.set()
        WorkerHeartbeat.objects.filter(name=name).update(stopped_at=timezone.now(), current_job=None)
    return 0


def run_setup_hook(spec: str) -> None:
    import importlib

    module_name, _, function = spec.partition(":")
    if not function:
        raise SystemExit(f"--setup must be module:function, got {spec!r}")
    getattr(importlib.import_module(module_name), function)()
    log.info("ran setup hook %s", spec)


def preload_engine() -> None:
    """Import the engine and let it load its models once for this process (kept across jobs)."""
    from reconstruction import pipeline

    preload = getattr(pipeline, "preload_models", None)
    if preload is None:
        log.info("engine has no preload_models(); models load on first use and stay cached in this process")
        return
    from workers.jobs import MODELS, worker_device

    preload(device=worker_device(), models=MODELS)


if __name__ == "__main__":
    sys.exit(main())
