"""What the paper's presets would cost on a GPU, projected on a CPU with weights on the ``meta`` device.

    python benchmarks/gpu_projection.py                       # celeba128, celebahq256, celebahq1024
    python benchmarks/gpu_projection.py --fraction 0.3 --json-out projection.json

For each preset: parameters; FLOPs per training image of one Algorithm 1 step (every encoder and generator
pass, forward and backward, counted by ``FlopCounterMode`` on meta tensors: shapes only, nothing computed);
the bytes saved for the backward passes per image (an activation estimate, with and without
``--checkpoint-activations``) and the fixed memory of weights, gradients and Adam's moments; the largest batch
that fits in 40, 80 and 141 GB; and img/s and minutes per 30,000-image epoch on an A100, H100 and H200 at
``--fraction`` of their published dense bf16 peaks. Every such cell is **projected**: nothing here ran on a GPU.
``benchmarks/gpu_check.py`` prints its measured figures in the same columns.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from introvae.model import IntroVAE, count_parameters
from introvae.objectives import make_objective
from introvae.presets import get_preset
from introvae.step import TrainStep

# Published dense (no sparsity) bf16 tensor-core peaks, TFLOP/s: A100 SXM 312; H100 SXM and H200 989.
GPUS = {"A100 80GB": (312.0, 80), "H100 80GB": (989.0, 80), "H200 141GB": (989.0, 141)}
MEMORY_GB = (40, 80, 141)
EPOCH_IMAGES = 30_000  # CelebA-HQ
HEADROOM = 0.9  # of a GPU's memory usable for tensors (the CUDA context, allocator slack, cuDNN workspaces)


class _NoStep:
    """An optimiser that does nothing: the projection counts the passes, not Adam's update."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass


def step_cost(cfg, *, batch: int, checkpoint_activations: bool, device: str = "meta") -> dict:
    """FLOPs and bytes saved for backward, per image, of one Algorithm 1 step of the config ``cfg`` (on meta
    tensors: shapes only)."""
    with torch.device(device):
        model = IntroVAE(cfg.model).checkpoint_activations(checkpoint_activations).train()
    margin = cfg.margin if cfg.margin != "auto" else 100.0
    objective = make_objective(cfg, margin=margin)
    step = TrainStep(model, {"encoder": _NoStep(), "decoder": _NoStep()}, guard=False)
    params = {id(p) for p in model.parameters()}
    saved = {"bytes": 0}

    def pack(t):
        if id(t) not in params:  # weights are kept anyway; count what a step adds
            saved["bytes"] += t.numel() * t.element_size()
        return t

    m = cfg.model
    x = torch.rand(batch, m.in_channels, m.image_size, m.image_size, device=device)
    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(objective, x)
    return {"flops_per_image": counter.get_total_flops() / batch, "saved_bytes_per_image": saved["bytes"] / batch,
            "parameters": count_parameters(model)}


def project(preset: str, *, fraction: float) -> dict:
    cfg = get_preset(preset)
    plain = step_cost(cfg, batch=2, checkpoint_activations=False)
    ckpt = step_cost(cfg, batch=2, checkpoint_activations=True)
    # fp32 weights, gradients and Adam's two moments for both networks (+ an EMA generator would add 4 bytes each)
    fixed = plain["parameters"] * 16
    row = {"preset": preset, "image_size": cfg.model.image_size, "parameters": plain["parameters"],
           "gflop_per_image": plain["flops_per_image"] / 1e9, "fixed_gib": fixed / 2**30,
           "activations_mib_per_image": plain["saved_bytes_per_image"] / 2**20,
           "activations_mib_per_image_checkpointed": ckpt["saved_bytes_per_image"] / 2**20,
           "preset_batch": cfg.batch_size, "projected": True, "fraction_of_peak": fraction}
    for gb in MEMORY_GB:
        free = gb * 1e9 * HEADROOM - fixed
        row[f"max_batch_{gb}gb"] = max(0, int(free // plain["saved_bytes_per_image"]))
        row[f"max_batch_{gb}gb_checkpointed"] = max(0, int(free // ckpt["saved_bytes_per_image"]))
    for gpu, (peak, _) in GPUS.items():
        img_s = peak * 1e12 * fraction / plain["flops_per_image"]
        row[f"img_s {gpu}"] = img_s
        row[f"minutes_per_epoch {gpu}"] = EPOCH_IMAGES / img_s / 60
    return row


def table(rows: list[dict]) -> str:
    gpus = list(GPUS)
    head = ["preset", "params (M)", "GFLOP/img", "activations MiB/img (ckpt)", "fixed GiB",
            *(f"max batch {gb} GB (ckpt)" for gb in MEMORY_GB), *(f"img/s {g}" for g in gpus),
            *(f"min/epoch {g}" for g in gpus)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['preset']}`", f"{r['parameters'] / 1e6:.1f}", f"{r['gflop_per_image']:.0f}",
                 f"{r['activations_mib_per_image']:.0f} ({r['activations_mib_per_image_checkpointed']:.0f})",
                 f"{r['fixed_gib']:.2f}",
                 *(f"{r[f'max_batch_{gb}gb']} ({r[f'max_batch_{gb}gb_checkpointed']})" for gb in MEMORY_GB),
                 *(f"{r[f'img_s {g}']:.0f} (projected)" for g in gpus),
                 *(f"{r[f'minutes_per_epoch {g}']:.1f} (projected)" for g in gpus)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=["celeba128", "celebahq256", "celebahq1024"])
    p.add_argument("--fraction", type=float, default=0.3,
                   help="fraction of the published bf16 peak a step reaches (default 0.3, a guess: the high-resolution "
                        "stages have few channels and are bound by memory bandwidth; gpu_check measures it)")
    p.add_argument("--json-out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    rows = [project(name, fraction=args.fraction) for name in args.preset]
    print(f"# projected, not measured: weights on the meta device; img/s at {args.fraction:.0%} of each GPU's "
          f"published dense bf16 peak; activations = bytes saved for backward in fp32 (bf16 autocast saves less); "
          f"{HEADROOM:.0%} of memory usable")
    print(table(rows))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
