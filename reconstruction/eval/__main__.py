"""``python -m reconstruction.eval --results_dir R [--dataset D --category C]``: metrics against ground truth.

Evaluates every video that has ground truth and at least one stage output, prints a table and writes
``metrics.json`` beside each stage-4 result (``layout.metrics(vid)``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from reconstruction.eval.evaluate import evaluate_and_save, videos_with_ground_truth
from reconstruction.layout import Layout

logger = logging.getLogger("reconstruction.eval")

TABLE_COLUMNS = (
    ("human_pose", "body_mpjpe_m", "S1 MPJPE"),
    ("human_pose", "body_pa_mpjpe_m", "S1 PA"),
    ("object_pose", "object_translation_error_m", "S3 t err"),
    ("object_pose", "object_rotation_error_deg", "S3 R deg"),
    ("optimize", "body_mpjpe_m", "S4 MPJPE"),
    ("optimize", "body_pa_mpjpe_m", "S4 PA"),
    ("optimize", "hand_joint_error_m", "S4 hand"),
    ("optimize", "object_translation_error_m", "S4 t err"),
    ("optimize", "object_rotation_error_deg", "S4 R deg"),
    ("optimize", "object_add_s_m", "S4 ADD-S"),
    ("optimize", "penetration_max_m", "S4 pen"),
    ("optimize", "contact_right_f1", "S4 F1 R"),
)


def format_table(reports: list[dict]) -> str:
    name_width = max([len("video")] + [len(r["video"]) for r in reports])
    header = "video".ljust(name_width) + "".join(f"{title:>10}" for _, _, title in TABLE_COLUMNS)
    lines = [header, "-" * len(header)]
    for report in reports:
        cells = []
        for stage, key, _ in TABLE_COLUMNS:
            value = report["stages"].get(stage, {}).get(key)
            cells.append(f"{value:>10.4f}" if value is not None else f"{'-':>10}")
        lines.append(report["video"].ljust(name_width) + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reconstruction.eval", description=__doc__)
    parser.add_argument("--results_dir", required=True)
    parser.add_argument("--dataset")
    parser.add_argument("--category")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    layout = Layout.create(args.results_dir)
    reports = []
    for vid in videos_with_ground_truth(layout, args.dataset, args.category):
        report = evaluate_and_save(layout, vid, args.device)
        if not report["stages"]:
            logger.info("%s: no stage outputs to evaluate yet", vid)
        reports.append(report)
    if not reports:
        print(f"no videos with ground truth under {args.results_dir}")
        return 1
    print(format_table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
