"""``python -m reconstruction``: flags, clear errors, sharding, failure summary, SIGKILL safety
(light stages of ``pipeline_light_stages``, in-process and as a real subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconstruction import pipeline
from reconstruction.__main__ import ProgressDisplay, main
from reconstruction.layout import VideoId
from tests import pipeline_light_stages as light
from tests.pipeline_helpers import make_results_dir, manifests
from tests.pipeline_light_stages import light_stages  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parents[1]
IDS = [f"synth/{cat}/v{i}" for cat in ("box", "mug") for i in range(4)] + ["other/box/v9"]


@pytest.fixture
def results(tmp_path):
    return make_results_dir(tmp_path / "res", IDS, size=256)


def ran(tmp_path: Path) -> list[tuple[int, str]]:
    log = tmp_path / "stage_log.txt"
    lines = log.read_text().split("\n") if log.exists() else []
    log.unlink(missing_ok=True)
    return [(int(line.split()[0]), line.split()[1]) for line in lines if line]


def cli(results, *args: str) -> int:
    return main(["--results_dir", str(results.results_dir), "--device", "cpu", *args])


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
        (["--dataset", "synth", "--job_chunk_idx", "3", "--num_job_chunks", "3"], "--job_chunk_idx must be in [0, 2]"),
        (["--dataset", "synth", "--num_job_chunks", "0"], "--num_job_chunks must be >= 1"),
        (["--dataset", "synth", "--batch_videos", "0"], "--batch_videos must be >= 1"),
        (["--category", "box"], "--category needs --dataset"),
        ([], "name the videos: --video_id"),
        (["--video_id", "synth/box"], "--video_id: video id must be <dataset>/<category>/<name>"),
        (["--video_id", "synth/box/nope"], "input video not found"),
        (["--video_id", "synth/box/v0", "--dataset", "synth"], "cannot be combined"),
        (["--dataset", "nothing_here"], "no videos (*.mp4) found under"),
        (["--dataset", "synth", "--config", "/nonexistent.yaml"], "config file not found: /nonexistent.yaml"),
        (["--dataset", "synth", "--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
        (["--dataset", "synth", "--job_chunk_idx", "x"], "invalid int value: 'x'"),
    ],
)
def test_bad_flags_give_one_clear_line_and_exit_2(results, capsys, args, problem):
    assert cli(results, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("python -m reconstruction: error: ") and problem in err[0], err[0]


def test_missing_results_dir_and_bad_config_key(tmp_path, capsys):
    assert main(["--results_dir", str(tmp_path / "absent"), "--dataset", "d"]) == 2
    assert "--results_dir: folder not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("paths: {}\nhuman_model: {}\noptimization: {niterr: 3}\n")
    make_results_dir(tmp_path / "res", ["d/c/v"])
    assert main(["--results_dir", str(tmp_path / "res"), "--dataset", "d", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optimization.niterr: unknown key" in err[0]


def test_dataset_and_category_select_videos(results, tmp_path):
    assert cli(results, "--dataset", "synth", "--category", "mug", "--skip_step2", "--skip_step3",
               "--skip_step4", "--skip_step5", "--skip_step6") == 0  # fmt: skip
    assert sorted(v for _, v in ran(tmp_path)) == [f"synth/mug/v{i}" for i in range(4)]
    assert cli(results, "--dataset", "other") == 0
    assert {v for _, v in ran(tmp_path)} == {"other/box/v9"}


def test_job_chunks_partition_the_videos_exactly(results, tmp_path, capsys):
    seen: list[str] = []
    for idx in range(3):
        assert cli(results, "--dataset", "synth", "--job_chunk_idx", str(idx), "--num_job_chunks", "3") == 0
        chunk = sorted({v for _, v in ran(tmp_path)})
        assert len(chunk) in (2, 3)
        seen += chunk
    synth = [v for v in IDS if v.startswith("synth/")]
    assert sorted(seen) == sorted(synth) and len(seen) == len(set(seen))
    # each chunk ran all six stages of each of its videos
    for vid in synth:
        assert sorted(manifests(results, VideoId.parse(vid))) == [1, 2, 3, 4, 5, 6]
    # more chunks than videos: the empty chunk succeeds doing nothing
    assert cli(results, "--dataset", "other", "--job_chunk_idx", "1", "--num_job_chunks", "2") == 0
    assert ran(tmp_path) == []


def test_stage_failure_continues_and_summarises(results, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIGHT_STAGE_FAIL_2", "synth/box/v1")
    assert cli(results, "--dataset", "synth", "--category", "box") == 1
    out, err = capsys.readouterr()
    assert "synth/box/v1 stage 2 (preprocess) failed" in err
    header, rule, *rows = out.strip().splitlines()
    assert header.split() == ["video", "stage", "status", "seconds"]
    table = {(row.split()[0], int(row.split()[1])): row.split()[3] for row in rows}
    assert table[("synth/box/v1", 2)] == "failed" and ("synth/box/v1", 3) not in table
    for vid in ("synth/box/v0", "synth/box/v2", "synth/box/v3"):
        assert [table[(vid, s)] for s in range(1, 7)] == ["done"] * 6


def test_skip_done_cli_reruns_nothing(results, tmp_path, capsys):
    assert cli(results, "--video_id", "synth/box/v0") == 0
    ran(tmp_path)
    capsys.readouterr()
    assert cli(results, "--video_id", "synth/box/v0", "--skip_done") == 0
    assert ran(tmp_path) == []
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [row.split()[3] for row in rows] == ["reused"] * 6


def test_skipped_stage_without_outputs_exits_2(results, capsys):
    assert cli(results, "--video_id", "synth/box/v0", "--skip_step1", "--skip_step2", "--skip_step3") == 2
    err = capsys.readouterr().err
    assert "stage 1 (human_pose) is skipped (--skip_step1) but its output is missing" in err


def test_progress_display_tty_and_plain(tmp_path, caplog):
    import io

    stream = io.StringIO()
    display = ProgressDisplay(stream, total_videos=2, stages=[1, 2, 3, 4, 5, 6], tty=True)
    vid = VideoId.parse("d/c/v")
    display.update(vid, 4, 0.5, "init_opt")
    text = stream.getvalue()
    assert (
        "[1/2] d/c/v [#######-----]" in text and "stage 4 optimize [##########----------]  50%     0s init_opt" in text
    )
    for step in range(1000):  # a fast loop redraws at most ~10 times a second
        display.update(vid, 4, 0.5 + step / 4000, "iter")
    assert stream.getvalue().count("iter") < 5
    display.close()
    assert stream.getvalue().endswith("\r\x1b[2K")
    plain = ProgressDisplay(io.StringIO(), total_videos=1, stages=[4], tty=False)
    with caplog.at_level("INFO", logger="reconstruction.cli"):
        for step in range(100):
            plain.update(vid, 4, step / 100, "step")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and lines[0] == "d/c/v stage 4 optimize:   0% step"  # one line per 10 %


def _cli_subprocess(results, *args: str, env: dict[str, str]) -> subprocess.Popen:
    code = (
        "import sys; from tests import pipeline_light_stages as s; s.register_all(); "
        "from reconstruction.__main__ import main; sys.exit(main())"
    )
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    cmd = [sys.executable, "-c", code, "--results_dir", str(results.results_dir), "--device", "cpu", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_stage_leaves_nothing_trusted(results, tmp_path):
    vid = VideoId.parse("synth/box/v0")
    env = {"LIGHT_STAGE_LOG": str(tmp_path / "stage_log.txt"), "LIGHT_STAGE_SLEEP_4": "30"}
    proc = _cli_subprocess(results, "--video_id", str(vid), env=env)
    deadline = time.monotonic() + 60
    try:
        # stage 4 writes hoi_data.pkl, then works for 30 s before its second output: kill it there
        while not results.raw_hoi_data(vid).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "stage 4 never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(manifests(results, vid)) == [1, 2, 3]  # no manifest of the killed stage
    assert results.raw_hoi_data(vid).exists()  # the partial artefact is there, but nothing trusts it
    ran(tmp_path)
    rerun = _cli_subprocess(
        results, "--video_id", str(vid), "--skip_done", env={"LIGHT_STAGE_LOG": env["LIGHT_STAGE_LOG"]}
    )
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert ran(tmp_path) == [(4, str(vid)), (5, str(vid)), (6, str(vid))]
    assert "rerun: no manifest" in err
    assert sorted(manifests(results, vid)) == [1, 2, 3, 4, 5, 6]


def test_sigterm_cancels_cooperatively_and_rolls_back(results, tmp_path):
    vid = VideoId.parse("synth/box/v0")
    proc = _cli_subprocess(results, "--video_id", str(vid), env={"LIGHT_STAGE_SLEEP_3": "30"})
    deadline = time.monotonic() + 60
    while not results.object_poses(vid).exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "stage 3 object_pose: cancelled" in err
    assert not results.object_poses(vid).exists() and sorted(manifests(results, vid)) == [1, 2]
    assert "3 object_pose  cancelled" in out


def test_python_dash_m_entry_point(results):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "reconstruction", "--results_dir", str(results.results_dir),
                           "--dataset", "synth", "--num_job_chunks", "2", "--job_chunk_idx", "5"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "python -m reconstruction: error: --job_chunk_idx must be in [0, 1], got 5"


def test_registry_lists_every_stage():
    assert sorted(pipeline.STAGE_MODULES) == [1, 2, 3, 4, 5, 6]
    assert sorted(pipeline.STAGE_CONFIG_KEYS) == [1, 2, 3, 4, 5, 6]


def test_verbose_and_static_object_flags_reach_the_stages(results):
    from types import SimpleNamespace

    seen = []

    def run(ctx):
        seen.append((ctx.verbose, ctx.is_static_obj, ctx.device))
        return light._run(ctx, 3)

    pipeline.register_stage(3, SimpleNamespace(NUMBER=3, NAME="object_pose", run=run))
    args = ["--video_id", "synth/box/v0", "--skip_step4", "--skip_step5", "--skip_step6"]
    assert cli(results, *args, "--verbose", "--is_static_obj") == 0
    assert seen == [(True, True, "cpu")]
    vid = VideoId.parse("synth/box/v0")
    assert manifests(results, vid)[3]["config"]["is_static_obj"] is True
    assert "is_static_obj" not in manifests(results, vid)[2]["config"]
    # the flag is part of stage 3's cache key: without it stage 3 reruns, stages 1-2 do not
    assert cli(results, *args, "--skip_done") == 0
    assert seen[-1] == (False, False, "cpu") and len(seen) == 2
