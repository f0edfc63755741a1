"""Stage 4's iteration must stay capturable: on CUDA the optimiser compiles the loss and captures whole
iterations (forward, backward, Adam) in a CUDA graph, which fails on any host synchronisation (``.item()``,
``bool(tensor)``, boolean indexing with data-dependent shapes). Dynamo's ``fullgraph=True`` refuses the same
constructs, so tracing the loss of every configured stage as one graph checks this on the CPU."""

from __future__ import annotations

import pytest
import torch

from reconstruction.config import load_config
from reconstruction.optim.optimizer import HOIOptimizer, _Batch

from .optim_scene import make_scene


@pytest.fixture(scope="module")
def body():
    from reconstruction.body import load_body_model

    return load_body_model("anny")


def test_every_stage_loss_traces_as_one_graph_with_depth(body):
    gt, video = make_scene(body, 6)
    video.object_moving = torch.arange(6) >= gt["contact_from"]  # obj_still_reg holds the still start
    video.object_pose_first_world = gt["obj_world"][0]
    height, width = video.image_size
    # depth known on the object and the human (as a MoGe-like backend gives): the depth term's full path
    video.depth = torch.full((6, height, width), 3.0)
    video.object_masks = torch.zeros(6, height, width, dtype=torch.bool)
    video.object_masks[:, height // 2 : height // 2 + 20, width // 2 : width // 2 + 20] = True
    video.human_masks = torch.zeros_like(video.object_masks)
    video.human_masks[:, height // 4 : height // 2, width // 3 : width // 2] = True
    config = load_config().optimization
    optimizer = HOIOptimizer(body, config)
    batch = _Batch([video], body, config, optimizer.device)
    assert batch.depth_obj is not None, "the depth term must be active for this test"
    batch.ground_z = torch.zeros(1)
    variables = optimizer._init_variables(batch)
    for name, spec in config.opt_stage_specs.items():
        eager = optimizer._terms(batch, variables, spec.loss_cfg)
        traced = torch.compile(lambda spec=spec: optimizer._terms(batch, variables, spec.loss_cfg),
                               backend="eager", fullgraph=True)()  # fmt: skip
        assert set(traced) == set(spec.loss_cfg), name
        for term in spec.loss_cfg:
            assert torch.allclose(traced[term], eager[term], rtol=1e-4, atol=1e-6), f"{name}.{term}"
        assert float(eager["depth_pointcloud"].detach().sum()) > 0 or "depth_pointcloud" not in spec.loss_cfg
