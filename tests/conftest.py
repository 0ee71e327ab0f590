"""Tiny configs and tiny generated data, so that the suite runs in seconds on a 2-core CPU."""

from __future__ import annotations

import contextlib
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from introvae import TrainConfig

torch.set_num_threads(1)


def tiny_config(**kw) -> TrainConfig:
    """A run of a few steps on the built-in faces at 16 px, with networks of a few thousand weights (flat field
    names, model fields included)."""
    base = dict(data="faces", image_size=16, in_channels=1, latent_dim=8, channels=(4, 8, 8), margin=5.0,
                alpha=0.25, beta=1.0, batch_size=4, steps=6, log_every=2, image_every=3, checkpoint_every=3,
                grid_size=4, holdout_fraction=0.2, device="cpu", precision="fp32")  # the same arithmetic on every CPU
    base.update(kw)
    return TrainConfig.from_dict(base)


def write_pngs(folder: Path, n: int, *, size=(20, 24), mode="RGB", seed=0) -> list[Path]:
    """``n`` smooth random images (gradients + blobs) of ``size`` = (w, h) as PNGs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    for k in range(n):
        c = rng.uniform(0.2, 0.8, size=3)
        img = np.stack([np.clip(c[i] + 0.3 * np.sin(6 * xx * (i + 1) + k) * yy, 0, 1) for i in range(3)], -1)
        p = folder / f"img{k:03d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).convert(mode).save(p)
        paths.append(p)
    return paths


def write_idx(path: Path, images: np.ndarray, *, gz: bool = False) -> Path:
    n, h, w = images.shape
    raw = struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@contextlib.contextmanager
def a_2d_run_killed_after_checkpoint(step: int):
    """Within the block a 2D density run dies (``SystemExit``, as a kill -9 would leave it) right after it writes its
    checkpoint of ``step``; yields the steps it saved. The checkpoint writer is restored on leaving."""
    from introvae.toy2d import run as toyrun

    save, saved = toyrun._Parts.save, []

    def save_then_die(self, path, config, at, **kw):
        save(self, path, config, at, **kw)
        saved.append(at)
        if at == step:
            raise SystemExit("killed")

    toyrun._Parts.save = save_then_die
    try:
        yield saved
    finally:
        toyrun._Parts.save = save


def tiny_features(images: torch.Tensor) -> torch.Tensor:
    """A fixed random conv net: a stand-in for Inception that runs in milliseconds, on the images' device."""
    g = torch.Generator().manual_seed(0)
    w1 = (torch.randn(16, 3, 3, 3, generator=g) * 0.3).to(images.device)
    w2 = (torch.randn(32, 16, 3, 3, generator=g) * 0.3).to(images.device)
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h = torch.relu(torch.nn.functional.conv2d(x, w1, padding=1))
    h = torch.relu(torch.nn.functional.conv2d(h, w2, padding=1, stride=2))
    return h.mean(dim=(2, 3))


@pytest.fixture(scope="session")
def faces16():
    """The built-in faces at 16 px: 80 training and 20 held-out images (matches ``tiny_config``)."""
    from introvae.data import load

    return load("faces", image_size=16, in_channels=1, holdout_fraction=0.2)


@pytest.fixture
def png_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    write_pngs(folder, 20)
    return folder


def model_and_reference(seed: int = 0):
    """For tests against a hand-written reference step: the tiny config, a tiny IntroVAE, a deep copy of it
    and a batch of 4 random 16 px images."""
    import copy

    from introvae import IntroVAE

    torch.manual_seed(seed)
    cfg = tiny_config()
    model = IntroVAE(cfg.model)
    return cfg, model, copy.deepcopy(model), torch.rand(4, 1, 16, 16)
