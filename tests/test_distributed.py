"""Several processes through torchrun (gloo on CPU): the 2-process run equals the 1-process run with the
global batch, and a run resumes with another number of processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from introvae import checkpoint
from introvae.distributed import SINGLE
from introvae.stats import read_stats
from introvae.trainer import Trainer, resume

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(n: int, *args: str, timeout: float = 300) -> str:
    """torchrun's output; on a timeout, the test fails with every process's Python stacks (faulthandler on
    SIGABRT), so that a hang names where it waits."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent), "PYTHONFAULTHANDLER": "1"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_all(p.pid, signal.SIGABRT)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            signal_all(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        pytest.fail(f"torchrun did not finish in {timeout:g} s; the stacks at the timeout:\n{err[-8000:]}")
    assert p.returncode == 0, out[-3000:] + err[-3000:]
    return out + err


def signal_all(pid: int, sig: int) -> None:
    """Signal torchrun (``pid``) and, first, its workers, which it starts in sessions of their own: its child
    processes as Linux's /proc lists them (elsewhere torchrun alone)."""
    try:
        workers = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        workers = []
    for q in workers + [pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(q, sig)


def final_state(run: Path) -> dict:
    return checkpoint.load(checkpoint.latest(run))


@pytest.mark.slow
def test_two_processes_with_sync_bn_match_one_process_with_twice_the_batch(tmp_path, faces16):
    """torchrun -m introvae train, 2 processes x batch 4 with --sync-bn, against 1 process x batch 8.
    The 2 processes also recompute activations (--checkpoint-activations), which must change nothing.

    Both compute the same function of the same data and noise (each process takes its slice of the global
    batch and of the global noise draw; DDP averages the gradients of the two half-batch means, which is
    the gradient of the whole-batch mean; BatchNorm uses the statistics of the whole batch). What differs
    is only the order of float additions (partial sums per process; E[x^2] - E[x]^2 instead of torch's
    variance kernel), about 1e-7 relative per sum. After 5 Adam steps at lr 2e-4 that stays far below
    1e-4 of each tensor's scale, while a real difference (per-process BatchNorm statistics, a missing
    all-reduce, unsynchronised noise) changes weights by 1e-2 to 1 of their scale (measured: 1.16 without
    --sync-bn), so the tolerance separates the two by orders of magnitude. The margin is auto: its average
    of kl_real is all-reduced every step, so both processes hinge at the one-process margin."""
    cfg = tiny_config(steps=5, batch_size=8, vae_steps=2, checkpoint_every=100, image_every=100, margin="auto")
    cfg_file = tmp_path / "tiny.json"
    cfg.save(cfg_file)
    out = torchrun(2, "-m", "introvae", "train", "--config", str(cfg_file), "--batch-size", "4", "--sync-bn", "--checkpoint-activations",
                   "--out", str(tmp_path / "two"), "--quiet")
    assert "on 2 processes (global batch 8)" in out and out.count("done: step 5") == 1  # rank 0 alone prints

    Trainer(cfg, tmp_path / "one", data=faces16, show_progress=False, log=lambda s: None, world=SINGLE).train()
    a, b = final_state(tmp_path / "one"), final_state(tmp_path / "two")
    assert b["processes"] == 2 and b["step"] == a["step"] == 5
    for name, t in a["model"].items():
        if t.is_floating_point():
            diff = (t - b["model"][name]).abs().max().item()
            assert diff <= 1e-4 * t.abs().max().item() + 1e-6, (name, diff)
    rows_a, rows_b = read_stats(tmp_path / "one"), read_stats(tmp_path / "two")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):  # the logged losses are the means over both processes
        for k in ("loss_encoder", "loss_generator", "reconstruction", "kl_real"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-4), (ra["step"], k)
    assert rows_b[-1]["margin"] == pytest.approx(rows_a[-1]["margin"], rel=1e-4)
    two = final_state(tmp_path / "two")["auto_margin"]  # rank 0's; rank 1's is the same by the all-reduce
    assert two["average"].item() == pytest.approx(final_state(tmp_path / "one")["auto_margin"]["average"].item(), rel=1e-4)
    assert rows_b[-1]["kl_fake"] == pytest.approx(rows_a[-1]["kl_fake"], rel=1e-4)


@pytest.mark.slow
def test_a_run_resumes_with_another_number_of_processes(tmp_path, faces16):
    """1 process -> 2 processes -> 1 process. The run keeps its length in images and its place in the
    data order: 80 training images, batch 4 per process."""
    cfg = tiny_config(steps=8, batch_size=4, checkpoint_every=100, image_every=100, log_every=1)
    cfg_file, run = tmp_path / "tiny.json", tmp_path / "run"
    cfg.save(cfg_file)
    t = Trainer(cfg, run, data=faces16, show_progress=False, log=lambda s: None, world=SINGLE)
    t.train(stop_after=4)
    assert (t.run.epoch, t.run.epoch_images, t.run.total_steps) == (0, 16, 8)

    # 2 processes: the 4 remaining steps of 4 images become 2 of 8; stop after one of them.
    out = torchrun(2, str(WORKER), str(cfg_file), str(run), "5", "--resume")
    assert "instead of 1: global batch 4 -> 8; 2 steps remain" in out
    assert "rank 0: step 5 of 6, epoch 0 +24 images" in out and "rank 1: step 5 of 6, epoch 0 +24 images" in out
    state = final_state(run)
    assert (state["step"], state["processes"], state["data_epoch_images"]) == (5, 2, 24)

    messages: list[str] = []
    r = resume(run, data=faces16, show_progress=False, log=messages.append, world=SINGLE)
    assert r.run.total_steps == 7 and any("instead of 2: global batch 8 -> 4" in m for m in messages)
    r.train()
    assert (r.step, r.run.epoch, r.run.epoch_images) == (7, 0, 32)  # 16 + 8 + 8 images: none skipped, none twice
    assert [row["step"] for row in read_stats(run) if "loss_encoder" in row] == list(range(1, 8))
    assert json.loads((run / "config.json").read_text())["batch_size"] == 4
    assert torch.isfinite(torch.cat([v.flatten().float() for v in final_state(run)["model"].values()])).all()


def test_a_process_group_the_caller_made_is_left_to_the_caller(tmp_path):
    """Under torchrun with a group the user created: we join it, and never destroy it."""
    import torch.distributed as dist

    from introvae import distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        distributed.setup(distributed.World(rank=0, size=2), torch.device("cpu"))  # joins, makes nothing
        distributed.teardown()
        assert dist.is_initialized()  # still the caller's
    finally:
        dist.destroy_process_group()


def test_a_gpu_process_joins_nccl_bound_to_its_local_rank_and_leaves_after_a_barrier(monkeypatch):
    """No GPU needed: the process-group calls are recorded. Under torchrun with LOCAL_RANK 1 on a 2-GPU node the
    group is NCCL bound to cuda:1 (its barriers synchronise there), host flags get a gloo group, and a clean
    teardown meets at a barrier before destroying the group; an error-path teardown does not wait."""
    import torch.distributed as dist

    from introvae import distributed

    calls = []
    state = {"up": False}

    def init(backend, **kw):
        calls.append(("init", backend, kw["device_id"]))
        state["up"] = True

    def destroy(group=None):
        calls.append(("destroy", group))
        state["up"] = False

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "is_initialized", lambda: state["up"])
    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(dist, "new_group", lambda backend: calls.append(("new_group", backend)) or "gloo-group")
    monkeypatch.setattr(dist, "barrier", lambda group=None: calls.append(("barrier", group)))
    monkeypatch.setattr(dist, "destroy_process_group", destroy)
    world = distributed.World(rank=3, size=4, local_rank=1)
    try:
        assert distributed.setup(world, torch.device("cuda")) == torch.device("cuda", 1)
        distributed.teardown(synchronise=True)
        assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl", torch.device("cuda", 1)),
                         ("new_group", "gloo"), ("barrier", None), ("destroy", None)]
        calls.clear()
        distributed.setup(world, torch.device("cuda"))
        distributed.teardown()  # an error path: no barrier
        assert [c[0] for c in calls] == ["set_device", "init", "new_group", "destroy"]
    finally:
        distributed._CONTROL_GROUP, distributed._OWN_GROUP = None, False
