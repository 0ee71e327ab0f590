"""benchmarks/gpu_projection.py: costs counted on the meta device are the costs of a real step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import tiny_config


def _projection():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_projection.py"
    spec = importlib.util.spec_from_file_location("gpu_projection", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_meta_device_counts_equal_a_real_cpu_step():
    proj = _projection()
    cfg = tiny_config()
    meta = proj.step_cost(cfg, batch=2, checkpoint_activations=False)
    cpu = proj.step_cost(cfg, batch=2, checkpoint_activations=False, device="cpu")
    assert meta == cpu and meta["flops_per_image"] > 0 and meta["saved_bytes_per_image"] > 0
    ckpt = proj.step_cost(cfg, batch=2, checkpoint_activations=True)
    assert ckpt["flops_per_image"] > meta["flops_per_image"]  # recomputation costs FLOPs ...
    assert ckpt["saved_bytes_per_image"] < meta["saved_bytes_per_image"]  # ... and saves memory


def test_the_projection_of_a_paper_preset_is_labelled_and_consistent():
    proj = _projection()
    row = proj.project("celeba128", fraction=0.5)
    assert row["projected"] and row["parameters"] > 10e6 and row["gflop_per_image"] > 100
    assert row["max_batch_40gb"] < row["max_batch_80gb"] < row["max_batch_141gb"]
    assert row["max_batch_80gb_checkpointed"] > row["max_batch_80gb"]
    assert row["img_s H100 80GB"] == pytest.approx(989e12 * 0.5 / (row["gflop_per_image"] * 1e9))
    assert "(projected)" in proj.table([row])
