"""The benchmark's fast config must stay the default config with fewer stage-4 iterations: a stale copy
would benchmark weights the engine no longer uses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconstruction.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_e2e_fast_config_is_the_default_but_for_iterations():
    default = load_config(REPO / "reconstruction" / "configs" / "manip_anny.yaml")
    fast = load_config(REPO / "benchmarks" / "e2e_cpu_fast.yaml")
    assert [s.niter for s in fast.optimization.opt_stage_specs.values()] == [100, 50, 50]
    specs = {
        name: replace(spec, niter=default.optimization.opt_stage_specs[name].niter)
        for name, spec in fast.optimization.opt_stage_specs.items()
    }
    assert replace(fast.optimization, opt_stage_specs=specs) == default.optimization
    assert replace(fast, optimization=default.optimization) == default
