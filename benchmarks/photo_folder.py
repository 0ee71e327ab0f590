"""A nested folder of colour photographs to try `introvae` on as a user would, built offline from the colour
photographs that scikit-image ships (random crops of them, flipped, at various sizes and formats), with a few
broken files among them.

    python benchmarks/photo_folder.py bench-runs/photos --count 600 --broken 3
    introvae train --data bench-runs/photos --image-size 64 --steps 2000 --vae-steps 500

Layout: ``<root>/<photograph>/<part>/<photograph>-NNNN.<jpg|png|webp>``; the broken files are a truncated
JPEG, a text file named ``.jpg`` and an empty ``.png``, in other sub-folders. The same arguments give the
same folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

# scikit-image's colour photographs that ship inside its wheel (no download); stereo_motorcycle is a pair.
SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "cat", "retina", "immunohistochemistry",
           "hubble_deep_field", "colorwheel", "stereo_motorcycle")


def photographs() -> dict[str, np.ndarray]:
    import skimage.data

    out = {}
    for name in SOURCES:
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
            out[f"{name}_left"], out[f"{name}_right"] = image[0], image[1]
        else:
            out[name] = image[..., :3]
    return out


def build(root: Path, count: int, broken: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    sources = photographs()
    names = sorted(sources)
    written = []
    for i in range(count):
        name = names[i % len(names)]
        image = sources[name]
        h, w = image.shape[:2]
        side = int(min(h, w) * rng.uniform(0.35, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(image[top:top + side, left:left + side])
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out_side = int(rng.choice([96, 128, 200, 320]))
        crop = crop.resize((out_side, int(out_side * rng.uniform(0.8, 1.25))), Image.Resampling.BICUBIC)
        ext = ("jpg", "png", "webp")[i % 3]
        path = root / name / f"part{i % 4}" / f"{name}-{i:04d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path)
        written.append(path)
    bad = root / "broken"
    bad.mkdir(parents=True, exist_ok=True)
    jpeg = next(p for p in written if p.suffix == ".jpg")
    makers = [lambda p: p.with_suffix(".jpg").write_bytes(jpeg.read_bytes()[:200]),  # cut off after its header
              lambda p: p.with_suffix(".jpg").write_text("not an image\n"),
              lambda p: p.with_suffix(".png").write_bytes(b"")]
    for k in range(broken):
        path = bad / f"sub{k}" / f"broken-{k}"
        path.parent.mkdir(parents=True, exist_ok=True)
        makers[k % len(makers)](path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--count", type=int, default=600)
    p.add_argument("--broken", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    written = build(Path(args.root), args.count, args.broken, args.seed)
    print(f"{len(written)} photographs and {args.broken} broken files under {args.root}")


if __name__ == "__main__":
    main()
