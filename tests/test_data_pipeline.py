"""benchmarks/data_pipeline.py runs on tiny generated sources and reports every configuration."""

import importlib.util
from pathlib import Path


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
