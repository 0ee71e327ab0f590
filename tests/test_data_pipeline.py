"""benchmarks/data_pipeline.py runs on tiny generated sources and reports every configuration."""

import importlib.util
import os
from pathlib import Path

import torch


def test_the_pipeline_benchmark_measures_each_source(tmp_path, capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "data_pipeline.py"
    spec = importlib.util.spec_from_file_location("data_pipeline", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--out", str(tmp_path), "--images", "24", "--source-size", "64", "--sizes", "32", "--workers", "0",
                "--batches", "2", "--batch-size", "4"])
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "images/s" not in ln]
    assert {r.split(" | ")[0].strip("| ") for r in rows} >= {"png", "jpeg", "prepared store"}
    assert all(float(r.split(" | ")[3]) > 0 for r in rows)


def test_loader_workers_auto_start_only_for_streamed_images_on_a_gpu(monkeypatch):
    from introvae.data.batches import auto_workers

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert auto_workers(3, device=cpu, streamed=False) == 3  # asked for: given
    assert auto_workers(-1, device=cpu, streamed=True) == 0  # a CPU keeps its cores for the step
    assert auto_workers(-1, device=cuda, streamed=False) == 0  # in memory or mapped: a batch is one copy
    assert auto_workers(-1, device=cuda, streamed=True) == 8  # 16 cores: at most 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert auto_workers(-1, device=cuda, streamed=True) == 3  # 4 processes share 16 cores, one kept by each
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert auto_workers(-1, device=cuda, streamed=True) == 1
