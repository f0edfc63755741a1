"""Server time of the runs list and triage pages with 10,000 runs (target: p95 < 300 ms).

Usage (PostgreSQL from DATABASE_URL's server; the benchmark uses its own database ``<name>_webbench``):

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/14 DEBUG=1 \\
        .venv/bin/python benchmarks/web_bench.py [--runs 10000] [--repeats 30]

Server time = the whole Django request (middleware, session auth, queries, template rendering) measured
around the in-process test client; no network. Seeded runs look like real ones: 4 datasets x 12 categories,
statuses, first failed checks, review states, 8 metrics each, a 6-stage status dict.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHECKS = ["passed", "passed", "passed", "object_mask", "eval_keypoint_tracking", "initial_penetration",
          "static_human", "camera_translation", "initial_human_position", "object_motion", ""]  # fmt: skip
METRICS = ["contact_distance", "penetration_ratio", "keypoint_tracking", "depth_pointcloud", "obj_smoothness",
           "human_smoothness", "foot_skating", "jitter"]  # fmt: skip


def bench_database_url() -> str:
    import dj_database_url
    import psycopg

    base = dj_database_url.parse(os.environ["DATABASE_URL"])
    name = f"{base['NAME']}_webbench"
    conninfo = (
        f"host={base['HOST'] or '127.0.0.1'} port={base['PORT'] or 5432} user={base['USER']} dbname={base['NAME']}"
    )
    if base.get("PASSWORD"):
        conninfo += f" password={base['PASSWORD']}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    auth = f"{base['USER']}:{base['PASSWORD']}@" if base.get("PASSWORD") else f"{base['USER']}@"
    return f"postgresql://{auth}{base['HOST'] or '127.0.0.1'}:{base['PORT'] or 5432}/{name}"


def seed(n_runs: int) -> None:
    from django.contrib.auth.models import User

    from hoiweb.models import Category, Dataset, Run, Video
    from hoiweb.roles import ensure_roles

    ensure_roles()
    if not User.objects.filter(username="bench").exists():
        user = User.objects.create_user("bench", password="bench")
        from django.contrib.auth.models import Group

        user.groups.add(Group.objects.get(name="admin"))
    have = Run.objects.count()
    if have >= n_runs:
        return
    rng = random.Random(0)
    categories = []
    for d in range(4):
        dataset, _ = Dataset.objects.get_or_create(name=f"dataset{d}")
        for c in range(12):
            categories.append(Category.objects.get_or_create(dataset=dataset, name=f"category{c:02d}")[0])
    videos = []
    existing = set(Video.objects.values_list("video_id", flat=True))
    for i in range(n_runs):
        category = categories[i % len(categories)]
        video_id = f"{category.dataset.name}/{category.name}/video{i:05d}"
        if video_id not in existing:
            videos.append(Video(category=category, name=f"video{i:05d}", video_id=video_id, num_frames=120, fps=30,
                                width=640, height=480))  # fmt: skip
    Video.objects.bulk_create(videos, batch_size=2000)
    video_rows = list(Video.objects.select_related("category").order_by("id"))
    statuses = ["succeeded"] * 8 + ["failed", "running", "queued", "cancelled"]
    reviews = ["unreviewed"] * 5 + ["accepted"] * 3 + ["rejected"] * 2
    yaml_text = "paths: {}\nhuman_model: {body_model: anny}\noptimization: {}\n"
    runs = []
    for i in range(have, n_runs):
        video = video_rows[i % len(video_rows)]
        status = rng.choice(statuses)
        done = status == "succeeded"
        runs.append(Run(
            video=video, category=video.category, config_name=rng.choice(["default", "manip v2", "manip v3"]),
            config_yaml=yaml_text, config_raw={}, status=status,
            stages={str(s): {"status": "succeeded" if done or s < 3 else "pending", "progress": 1.0 if done else 0.3,
                             "seconds": rng.uniform(5, 600)} for s in range(1, 7)},
            metrics={m: rng.lognormvariate(-3, 1) for m in METRICS},
            failed_check=rng.choice(CHECKS) if done else "",
            review_state=rng.choice(reviews) if done else "unreviewed",
        ))  # fmt: skip
    Run.objects.bulk_create(runs, batch_size=2000)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def measure(client, url: str, repeats: int) -> dict:
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - t0
        assert response.status_code == 200, (url, response.status_code)
        if i >= 2:  # two warm-up requests
            times.append(elapsed * 1000)
    times.sort()
    return {"url": url, "p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))], "max": times[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ["DATABASE_URL"] = bench_database_url()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hoiweb.settings")
    os.environ["ALLOWED_HOSTS"] = "testserver,localhost"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    t0 = time.perf_counter()
    seed(args.runs)
    seed_s = time.perf_counter() - t0
    from django.test import Client

    from hoiweb.models import Category, Run

    client = Client()
    assert client.login(username="bench", password="bench")
    category = Category.objects.order_by("id").first()
    urls = [
        "/",
        "/?page=150",
        "/?status=succeeded&review_state=unreviewed",
        f"/?category={category.pk}&failed_check=object_mask",
        "/?sort=-metric:contact_distance",
        "/?dataset=dataset2&sort=metric:penetration_ratio&page=20",
        "/?video=video0999",
        "/triage/",
        "/triage/?dataset=dataset1&status=succeeded",
        f"/runs/{Run.objects.order_by('id').first().pk}/?failed_check=passed",
        "/api/runs?status=failed&limit=100",
    ]
    results = [measure(client, url, args.repeats) for url in urls]
    print(f"# web_bench: {Run.objects.count()} runs, {args.repeats} timed requests per URL (seeding {seed_s:.1f} s)")
    print(f"# {platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} cores · "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · Python {platform.python_version()}")  # fmt: skip
    print("| page | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for r in results:
        print(f"| `{r['url']}` | {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} |")
    worst = max(r["p95"] for r in results)
    print(f"\nworst p95: {worst:.1f} ms (target < 300 ms): {'OK' if worst < 300 else 'TOO SLOW'}")
    return 0 if worst < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
