"""benchmarks/gpu_check.py, the command to run first on a GPU, runs its CPU part here: every check passes."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_passes_on_the_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "INTROVAE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = r.stdout[r.stdout.index("| check | result |"):].splitlines()[2:]
    results = {row.split(" | ")[0].strip("| "): row.split(" | ")[1] for row in table}
    assert len(results) == 11 and set(results.values()) == {"PASS", "skip"}, results
    assert results["2 processes over NCCL"] == "skip"  # needs two GPUs
    assert results["evaluate"] == "PASS" and results["torch.compile"] == "PASS"
