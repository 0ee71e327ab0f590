"""benchmarks/gpu_check.py, the command to run first on a GPU, runs its CPU part here: every check passes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_passes_on_the_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "INTROVAE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = [ln for ln in r.stdout[r.stdout.index("| check | result |"):].splitlines()[2:] if ln.startswith("|")]
    results = {row.split(" | ")[0].strip("| "): row.split(" | ")[1] for row in table}
    assert len(results) == 17 and set(results.values()) == {"PASS", "SKIP"}, results
    assert results["2 processes over NCCL"] == "SKIP"  # needs two GPUs
    assert results["evaluate"] == "PASS" and results["torch.compile"] == "PASS"
    assert results["resume on the device, extended"] == "PASS"  # bit for bit on the CPU
    assert results["2D density run killed and resumed on the device"] == "PASS"
    assert results["Soft-IntroVAE and the VAE baseline train (bf16)"] == "PASS"
    skipped = sum(v == "SKIP" for v in results.values())
    assert r.stdout.strip().splitlines()[-1] == f"{17 - skipped} passed, 0 failed, {skipped} skipped"


def test_a_required_check_that_cannot_run_fails(tmp_path):
    """--require nccl on a machine without two GPUs: the skip becomes a failure, and the exit status says so."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    gc.CHECKS[:] = [c for c in gc.CHECKS if "NCCL" in c[0]]
    sys.argv = ["gpu_check.py", "--device", "cpu", "--quick", "--out", str(tmp_path), "--require", "nccl"]
    assert gc.main() == 1
