"""Where bf16 Inception features go wrong: the folded fp32 graph with only some of its 94 convolutions in bf16.

    python benchmarks/fid_bf16_layers.py --images 48 --ranges 0:94,0:20,20:94,50:94

For each range, the convolutions in it take bf16 inputs and weights (their outputs are cast back to fp32, so
everything between them stays fp32); the rest stay fp32. Prints, against the fp32 graph on the same
Fashion-MNIST test images: the ratio of the features' sums (a systematic shrink shows here), of their per-feature
standard deviations, the relative error of the features, and images/s in one thread. A range that moves the sum
ratio away from 1 is where FID's bias comes from; one that only adds relative error adds noise.
"""

from __future__ import annotations

import argparse
import time

import torch

from introvae.data import load, to_float
from introvae.metrics import fid
from throughput import cpu_flags

BF16, FP32 = 15, 6  # ScalarType codes in TorchScript graphs


def _cast(graph, value, code: int, conv, *, after: bool = False):
    """An aten::to(value, code) node next to ``conv``."""
    dtype, no, none = graph.insertConstant(code), graph.insertConstant(False), graph.insertConstant(None)
    for c in (dtype, no, none):
        c.node().moveBefore(conv)
    node = graph.create("aten::to", [value, dtype, no, no, none])
    (node.insertAfter if after else node.insertBefore)(conv)
    return node


def partly_bf16(first: int, last: int) -> torch.jit.ScriptModule:
    net = fid.fold_batchnorm(torch.jit.load(str(fid.inception_path())).eval())
    g = net.graph
    for conv in [n for n in g.nodes() if n.kind() == "aten::conv2d"][first:last]:
        conv.replaceInput(0, _cast(g, conv.inputsAt(0), BF16, conv).output())
        for i in (1, 2):
            c = g.insertConstant(conv.inputsAt(i).toIValue().to(torch.bfloat16))
            c.node().moveBefore(conv)
            conv.replaceInput(i, c)
        out = conv.output()
        back = _cast(g, out, FP32, conv, after=True)
        out.replaceAllUsesWith(back.output())
        back.replaceInput(0, out)
    torch._C._jit_pass_dce(g)
    return net


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--ranges", default="0:94,0:20,20:94,50:94")
    args = p.parse_args()
    torch.set_num_threads(1)
    test = load("fashion-mnist", image_size=32, in_channels=1).test[:args.images]
    x = fid.inception_inputs(to_float(test)).contiguous(memory_format=torch.channels_last)  # as evaluate's
    with torch.no_grad():
        ref = fid.fold_batchnorm(torch.jit.load(str(fid.inception_path())).eval())(x).float().flatten(1)
    print(f"{args.images} Fashion-MNIST test images; CPU flags: {cpu_flags()}\n")
    print("| convolutions in bf16 | feature sum ratio | std ratio | relative error | images/s (1 thread) |")
    print("|---|---|---|---|---|")
    for spec in args.ranges.split(","):
        a, b = map(int, spec.split(":"))
        net = partly_bf16(a, b)
        with torch.no_grad():
            net(x[:4])
            t = time.perf_counter()
            f = net(x).float().flatten(1)
            speed = len(x) / (time.perf_counter() - t)
        print(f"| {a}-{b - 1} | {(f.sum() / ref.sum()).item():.5f} | {(f.std(0).mean() / ref.std(0).mean()).item():.5f} "
              f"| {((f - ref).norm() / ref.norm()).item():.4f} | {speed:.1f} |")


if __name__ == "__main__":
    main()
