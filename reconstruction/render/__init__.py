"""The project's one renderer: batched pure-torch rasteriser plus helpers for stage 6 overlays."""

from reconstruction.render.rasterize import Mesh, RenderOutput, composite, render

__all__ = ["Mesh", "RenderOutput", "composite", "render"]
