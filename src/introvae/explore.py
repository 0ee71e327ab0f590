"""What ``introvae serve`` shows, as plain functions of a loaded model (the web page in ``serve`` is a thin layer).

Every operation takes and returns what a page deals in: images as uint8 arrays (H, W, C), numbers, text. Images
that come in (a file path, a PIL image or an array, of any size and format the training data accepted) are
prepared like the training data: centre-cropped, resized, converted to the model's channels (a colour image for a
grayscale model and the other way round). Anything that cannot be used raises :class:`DataError` with one line
that the page shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import DECODE_ERRORS, DataError, load, to_float, to_uint8
from .data.images import prepare
from .runs import model_dir, trained_on
from .grids import make_grid

MAX_PIXELS = 50_000_000  # an upload with more pixels is refused (PIL's own bomb check stops at 179M)
DIRECTION_IMAGES = 2_000  # training images the latent directions are computed on
NEIGHBOUR_IMAGES = 10_000  # training images searched for nearest neighbours


def as_array(images: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """Float images (N, C, H, W) or one (C, H, W) in [0, 1] -> uint8 (H, W, 3) for display: a grid, each image
    enlarged (nearest neighbour) to at least 128 px so that small models' images can be seen."""
    images = images[None] if images.dim() == 3 else images
    x = make_grid(images, nrow or len(images), min_cell=128, padding=2 if len(images) > 1 else 0)
    a = to_uint8(x).cpu().permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


class Explorer:
    """A model (run directory, checkpoint or export) loaded for exploring, with its training data when known.

    ``data`` names the training data for an export (which does not record it); a run knows its own."""

    def __init__(self, source: str | Path, *, device: str | torch.device = "auto", data: str | None = None):
        from . import hub
        from .runs import load_model

        self.source = hub.resolve(source)  # a path, a shipped model's name, or hf://OWNER/NAME
        self.model = load_model(self.source, device=device).eval()
        self.config = self.model.config
        self.run_config = self.model.run_config
        self.data_id = data or trained_on(self.model, self.source)
        self.step = self.model.step  # None for an export
        self._train: torch.Tensor | None = None
        self._directions: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # --- what the model is ------------------------------------------------------------------
    def _card_metrics(self) -> str:
        """The metrics a shipped or exported model's README.md card records (with their protocol in the name)."""
        from . import hub

        if not self.source.is_dir():
            return ""
        results = (hub.card_metadata(self.source).get("model-index") or [{}])[0].get("results") or [{}]
        return ", ".join(f"{m['name']}: {m['value']}" for m in results[0].get("metrics", []))

    def card(self) -> str:
        """The model card (markdown): data, resolution, objective, steps, and the metrics of its last evaluation."""
        from .metrics.store import read_metrics

        c, r = self.config, self.run_config
        lines = [f"**{self.source.name}** · data: {self.data_id or 'not recorded (give --data)'} · "
                 f"{c.image_size} px {'RGB' if c.in_channels == 3 else 'grayscale'} · latent size {c.latent_dim}"]
        if r is not None:
            lines.append(f"objective: {r.objective} ({r.weights_words()}) · step {self.step} · generator: "
                         f"{self.model.generator_source}")
        rows = [m for m in read_metrics(model_dir(self.source)) if "fid" in m.get("metrics", {})]
        if rows:
            m = rows[-1]["metrics"]
            parts = [f"FID {m['fid']['value']:.1f} ({m['fid']['samples']} samples)"]
            if "precision" in m.get("precision_recall", {}):
                parts.append(f"precision {m['precision_recall']['precision']:.3f}, "
                             f"recall {m['precision_recall']['recall']:.3f}")
            if "reconstruction" in m:
                parts.append(f"held-out PSNR {m['reconstruction']['posterior_mean']['psnr']:.2f} dB")
            lines.append(f"last evaluation (step {rows[-1].get('step')}): " + ", ".join(parts))
        elif card := self._card_metrics():
            lines.append("from its model card: " + card)
        else:
            lines.append("not evaluated yet (`introvae evaluate` adds FID and more here)")
        return "  \n".join(lines)

    # --- images in ----------------------------------------------------------------------------
    def image(self, value) -> torch.Tensor:
        """An uploaded image (file path, PIL image or uint8/float array) as a float tensor (C, H, W) in [0, 1]."""
        if value is None:
            raise DataError("no image given")
        try:
            if isinstance(value, (str, Path)):
                p = Path(value)
                if not p.is_file():
                    raise DataError(f"not found: {p.name}")
                img = Image.open(p)
            elif isinstance(value, Image.Image):
                img = value
            else:
                a = np.asarray(value)
                if a.dtype != np.uint8:
                    a = (np.clip(a.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
                img = Image.fromarray(a if a.ndim == 2 or a.shape[2] != 1 else a[..., 0])
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise DataError(f"image too large ({w}x{h}, {w * h / 1e6:.0f} megapixels; at most "
                                f"{MAX_PIXELS / 1e6:.0f})")
            arr = prepare(img, self.config.image_size, self.config.in_channels)
        except DataError:
            raise
        except DECODE_ERRORS as e:
            name = Path(value).name if isinstance(value, (str, Path)) else "the upload"
            raise DataError(f"{name} is not an image this model can read ({type(e).__name__})") from None
        return to_float(torch.from_numpy(arr))

    # --- the operations ----------------------------------------------------------------------
    def samples(self, seed: int = 0, temperature: float = 1.0, n: int = 16) -> np.ndarray:
        """A grid of ``n`` samples from z = temperature * N(0, I) drawn with ``seed`` (same seed, same images)."""
        z = self.model.latents(int(n), seed=int(seed)) * float(temperature)
        return as_array(self.model.decode(z), nrow=min(8, int(n)))

    def reconstruct(self, images: list) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """(input as the model sees it, its reconstruction, the encoder's KL of it) for each image."""
        x = torch.stack([self.image(v) for v in images])
        rec = self.model.reconstruct(x).cpu()
        kl = self.model.kl(x).cpu()
        return [(as_array(a), as_array(b), float(k)) for a, b, k in zip(x, rec, kl)]

    def interpolate(self, a, b, t: float) -> np.ndarray:
        """The decoded point at ``t`` in [0, 1] on the line between the posterior means of images ``a`` and ``b``."""
        mu, _ = self.model.encode(torch.stack([self.image(a), self.image(b)]))
        t = float(np.clip(t, 0.0, 1.0))
        return as_array(self.model.decode(((1 - t) * mu[0] + t * mu[1])[None], encoded=True)[0])

    def strip(self, a, b, steps: int = 8) -> np.ndarray:
        """The whole interpolation (Fig. 6) as one strip of ``steps`` images."""
        return as_array(self.model.interpolate(self.image(a), self.image(b), int(steps)), nrow=int(steps))

    def training_images(self) -> torch.Tensor:
        """The model's training images (uint8, CPU), loaded once; a DataError when the data is not known."""
        if self._train is None:
            if not self.data_id:
                raise DataError("this model does not record its training data: start serve with --data")
            c = self.config
            holdout = self.run_config.holdout_fraction if self.run_config else 0.1
            data = load(self.data_id, image_size=c.image_size, in_channels=c.in_channels,
                        holdout_fraction=holdout, show_progress=False)
            self._train = data.train[:NEIGHBOUR_IMAGES]
        return self._train

    def directions(self, k: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The principal directions of the encoded training images (:meth:`IntroVAE.latent_directions`), computed
        once and cached beside the model (``latent_directions.pt``, keyed by the checkpoint's step)."""
        if self._directions is None:
            path = model_dir(self.source) / "latent_directions.pt"
            key = {"step": self.step, "data": self.data_id, "k": k}
            if path.is_file():
                saved = torch.load(path, weights_only=True)
                if json.loads(saved["key"]) == key:
                    self._directions = saved["mean"], saved["directions"], saved["std"]
            if self._directions is None:
                images = to_float(self.training_images()[:DIRECTION_IMAGES])
                self._directions = self.model.latent_directions(images, k)
                try:
                    torch.save({"key": json.dumps(key), "mean": self._directions[0],
                                "directions": self._directions[1], "std": self._directions[2]}, path)
                except OSError:  # a read-only model directory: keep them in memory
                    pass
        return self._directions

    def edit(self, image, amounts: list[float]) -> np.ndarray:
        """``image`` moved in latent space by ``amounts[i]`` standard deviations along direction ``i``, decoded."""
        _, dirs, std = self.directions()
        mu, _ = self.model.encode(self.image(image)[None])
        shift = sum(float(a) * s * d for a, s, d in zip(amounts, std, dirs))
        return as_array(self.model.decode(mu + torch.as_tensor(shift).to(mu)[None], encoded=True)[0])

    def neighbours(self, seed: int = 0, n: int = 4, k: int = 5) -> np.ndarray:
        """Rows of: a sample, then its ``k`` nearest training images in pixel space (L2; App. E)."""
        from .metrics.neighbours import nearest_k

        train = self.training_images()
        fake = self.model.decode(self.model.latents(int(n), seed=int(seed))).float().cpu().clamp(0, 1)
        nearest = nearest_k(fake, train, k).cpu()  # one search, the references streamed (the metric's)
        rows = []
        for f, idx in zip(fake, nearest):
            rows += [f[None], to_float(train[idx])]
        return as_array(torch.cat(rows), nrow=k + 1)
