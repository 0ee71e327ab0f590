"""Images per second the data pipeline delivers to the training loop (no model), by source, size and workers.

    python benchmarks/data_pipeline.py --out bench-runs/pipeline                 # 1024 px sources, 256 and 1024 px
    python benchmarks/data_pipeline.py --out /tmp/p --images 64 --sizes 64 --workers 0 1   # a quick look

Generates its sources (nothing is downloaded): ``--images`` photographs of ``--source-size`` px cut from
scikit-image's colour photographs, as a folder of PNGs, the same as JPEGs, an LMDB database of the JPEGs (with
the ``lmdb`` extra), and, for each training size, the store ``introvae prepare`` makes of the PNGs. Then, for
each (source, size, workers), it times ``--batches`` batches of ``--batch-size`` through the same
``data.batches`` the trainer uses (uint8 batches, as they cross to the device), after one warm-up batch. The
encoded sources are read streamed (decoded as the batches are drawn, as for data over the in-memory limit);
the store is mapped.
One JSON line per configuration, then a markdown table with the CPU's flags; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from introvae.data import batches, load
from introvae.data.prepared import prepare
from introvae.devices import cpu_flags


def make_sources(root: Path, n: int, size: int) -> dict[str, Path]:
    import skimage.data
    from PIL import Image

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    rng = np.random.default_rng(0)
    out = {"png": root / "png", "jpeg": root / "jpeg"}
    if not (out["png"] / "done").exists():
        for d in out.values():
            d.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            a = photos[k % len(photos)]
            h, w = a.shape[:2]
            s = int(min(h, w) * rng.uniform(0.5, 1.0))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            img = Image.fromarray(a[y:y + s, x:x + s]).resize((size, size), Image.Resampling.BICUBIC)
            img.save(out["png"] / f"{k:05d}.png")
            img.save(out["jpeg"] / f"{k:05d}.jpg", quality=90)
        (out["png"] / "done").touch()
    try:
        import lmdb
    except ImportError:
        return out
    out["lmdb"] = root / "lmdb"
    if not (out["lmdb"] / "data.mdb").exists():
        env = lmdb.open(str(out["lmdb"]), map_size=1 << 36)
        with env.begin(write=True) as txn:
            for f in sorted(out["jpeg"].glob("*.jpg")):
                txn.put(f.stem.encode(), f.read_bytes())
        env.close()
    return out


def measure(data: str, *, size: int, workers: int, batch_size: int, n_batches: int) -> dict:
    # a fresh cache per measurement: the folder is decoded as a first run would (not mapped from an earlier one)
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        os.environ["INTROVAE_CACHE"] = cache
        t0 = time.perf_counter()
        images = load(data, image_size=size, in_channels=3, show_progress=False, lazy=True)
        setup = time.perf_counter() - t0
        stream = batches(images.train, batch_size, seed=0, epoch=0, workers=workers, mirror=True, raw=True)
        next(stream)  # warm-up: worker start, first decode
        t0, n = time.perf_counter(), 0
        for k, (_, x, _) in enumerate(stream):
            n += len(x)
            if k + 1 >= n_batches:
                break
        seconds = time.perf_counter() - t0
    return {"images_per_s": round(n / seconds, 1), "setup_s": round(setup, 2), "images": n}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="where the generated sources and stores go")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--source-size", type=int, default=1024)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--json-out")
    args = p.parse_args(argv)
    root = Path(args.out)
    srcs = make_sources(root, args.images, args.source_size)
    rows = []
    for size in args.sizes:
        store = root / f"store-{size}"
        if not store.exists():
            prepare(str(srcs["png"]), store, image_size=size, in_channels=3, show_progress=False, say=lambda s: None)
        for name, path in [*srcs.items(), ("prepared store", store)]:
            for w in args.workers:
                r = {"source": name, "size": size, "workers": w, **measure(str(path), size=size, workers=w,
                                                                          batch_size=args.batch_size,
                                                                          n_batches=args.batches)}
                print(json.dumps(r), flush=True)
                rows.append(r)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))
    print(f"\nCPU flags: {' '.join(sorted(cpu_flags() & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16'}))}; "
          f"{args.images} source images of {args.source_size} px, batches of {args.batch_size}")
    print("| source | size | workers | images/s | set-up s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['size']} | {r['workers']} | {r['images_per_s']} | {r['setup_s']} |")


if __name__ == "__main__":
    main()
