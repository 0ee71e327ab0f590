"""The one options object every metric reads: what to score, against what, on which device, with caches.

A :class:`MetricContext` generates the samples once (in chunks of ``batch_size`` on the device), computes
their Inception features once, and takes the real images' features from a disk cache keyed by everything
they depend on (data set, split, count, resolution, channels, network), so that FID, MS-SSIM and the
nearest neighbours share them.

Memory stays bounded at any image size: samples beyond ``HOST_SAMPLE_BYTES`` (10,000 images at 256 px RGB
already take 1.8 GiB, at 1024 px 29 GiB) are written to a uint8 file mapped from disk instead of host memory,
and the fixed subset of real images is a view (:class:`Rows`) that reads its images chunk by chunk.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import numpy as np

from ..cache import exclusive
from ..config_checks import BN_PROTOCOLS, ENCODER_STATS, FEATURE_PRECISIONS, at_least, param, validate_fields
from ..data import ImageSet, to_float, to_uint8
from ..errors import MetricError
from . import fid as fidlib
from . import partial, protocol


HOST_SAMPLE_BYTES = 2 * 2**30  # generated images kept in host memory; more go to a file mapped from disk


class Rows:
    """``base[index]`` without copying it: the rows of ``base`` (a uint8 tensor or a lazily read data set) that
    ``index`` (increasing) selects, read when indexed by an int, a slice or an index tensor."""

    def __init__(self, base, index: Tensor):
        self.base, self.index = base, index
        self.dtype = torch.uint8

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx):
        picked = self.index[idx]
        return self.base[int(picked)] if picked.dim() == 0 else self.base[picked]


@dataclass(frozen=True)
class EvalSettings:
    """How a model or a folder of images is scored; ``introvae evaluate``'s flags are made from these fields."""

    num_samples: int = param(10_000, "generated images for FID (the paper uses 50000)", rule=at_least(2),
                             group="evaluate")
    pairs: int = param(10_000, "random pairs for MS-SSIM (as the paper)", rule=at_least(2), group="evaluate")
    ref_split: str = param("auto", "the real images FID compares with: auto takes the data set's official test "
                                   "split where it has one (Fashion-MNIST and other IDX data, as the literature "
                                   "does), else the training images; train or test choose one",
                           choices=("auto", "train", "test"), group="evaluate")
    ref_images: int = param(10_000, "at most this many real images (a fixed subset)", rule=at_least(2),
                            group="evaluate")
    neighbours: int = param(8, "samples shown with their nearest training images", rule=at_least(0),
                            group="evaluate")
    batch_size: int = param(100, "images generated, encoded and scored at a time", rule=at_least(1),
                            group="evaluate")
    seed: int = param(0, "seed of the latents, the MS-SSIM pairs and the sampled reconstructions", group="evaluate")
    ema: bool = param(True, "score a run trained with --ema by its averaged generator (--no-ema: the trained one)",
                      group="evaluate")
    bn_protocol: str = param("eval", "the generator's BatchNorm statistics: eval (the running ones), train (those of "
                                     "each generated batch of --batch-size, as Soft-IntroVAE's published FIDs), "
                                     "recalibrate (re-estimated on --bn-samples fresh samples; metrics.batchnorm) or "
                                     "posterior (the encoder codes' set, which a VAE of 0.7.8 and before sampled "
                                     "with)",
                             choices=BN_PROTOCOLS, group="evaluate")
    encoder_stats: str = param("running", "the encoder's BatchNorm statistics: running (from training) or real "
                                          "(re-estimated on --bn-samples real training images)",
                               choices=ENCODER_STATS, group="evaluate")
    bn_samples: int = param(10_000, "images to re-estimate statistics on", rule=at_least(2), group="evaluate")
    feature_precision: str = param("fp32", "the Inception network's arithmetic: fp32 or bf16 (1.9x faster on a CPU "
                                           "with AVX512-BF16 or AMX, but its FIDs read about 1.2 %% lower than "
                                           "fp32's: compare bf16 numbers only with bf16 numbers; see README)",
                                   choices=FEATURE_PRECISIONS, group="evaluate")

    def __post_init__(self) -> None:
        validate_fields(self)


# `evaluate --screen`: the quick ranking protocol of the docs' screens (a forked setting against the preset, one
# checkpoint an epoch). 2,000 samples against 2,000 real images read higher than 10,000 against 10,000 (FID's bias
# falls with the sample count: about 10 higher at Fashion-MNIST's FIDs of 15 to 40), so its numbers rank runs
# scored alike and are never set beside published ones.
SCREEN = {"num_samples": 2000, "ref_images": 2000, "pairs": 2000, "neighbours": 0}


def _say(line: str) -> None:
    print(f"introvae: {line}", file=sys.stderr)


class MetricContext:
    """What a metric needs. ``model`` (eval mode, on ``device``) is scored by its samples; without one, the
    ``images`` given (uint8, e.g. a folder of another program's samples) are. With neither, the context still
    gives the real images and their features (``reference``, ``features_of``)."""

    def __init__(self, *, data: ImageSet, data_id: str, image_size: int, in_channels: int,
                 device: torch.device, settings: EvalSettings = EvalSettings(), model=None,
                 images: Tensor | None = None, features: Callable[[Tensor], Tensor] | None = None,
                 out_dir: Path | None = None, show_progress: bool = True):
        self.data, self.data_id, self.image_size, self.in_channels = data, data_id, image_size, in_channels
        self.device, self.settings, self.model, self._images = device, settings, model, images
        self._features, self.out_dir, self.show_progress = features, out_dir, show_progress
        self._kept: list[partial.PartialFeatures] = []  # complete features kept until finish()

    def finish(self) -> None:
        """The evaluation is recorded: delete the features kept on disk for a resumed run of it."""
        for kept in self._kept:
            kept.remove()
        self._kept.clear()

    @functools.cached_property
    def ref_split(self) -> str:
        """The split the samples are compared with (``auto`` resolved: test for data with an official one)."""
        return protocol.resolve_split(self.settings.ref_split, self.data.official_test)

    @functools.cached_property
    def protocol(self) -> dict:
        return protocol.describe(self)

    @functools.cached_property
    def feature_precision(self) -> str:
        """The Inception network's precision (``custom`` for a feature function given)."""
        if self._features is not None:
            return "custom"
        return fidlib.check_feature_precision(self.settings.feature_precision)

    @functools.cached_property
    def feature_fn(self) -> Callable[[Tensor], Tensor]:
        return self._features or fidlib.load_inception(self.device, precision=self.feature_precision)

    @functools.cached_property
    def samples(self) -> Tensor:
        """The scored images, uint8 on the CPU: ``num_samples`` generated in chunks, or the images given."""
        if self._images is not None:
            return self._images
        if self.model is None:
            raise MetricError("nothing to score: give a model or images")
        s = self.settings
        z = self.model.latents(s.num_samples, seed=s.seed)
        shape = (s.num_samples, self.in_channels, self.image_size, self.image_size)
        out = torch.empty(shape, dtype=torch.uint8) if np.prod(shape) <= HOST_SAMPLE_BYTES else self._spill(shape)
        start = 0
        for c in z.split(s.batch_size):
            out[start:start + len(c)] = to_uint8(self.model.sample(z=c)).cpu()
            start += len(c)
        return out

    def _spill(self, shape: tuple[int, ...]) -> Tensor:
        """A uint8 tensor of ``shape`` backed by a file (in the output folder, else the cache directory) that is
        deleted at once: the mapping keeps it readable while this context lives, and nothing is left behind."""
        where = self.out_dir if self.out_dir is not None else fidlib.cache_dir()
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".samples-", suffix=".u8", delete=False) as f:
            path = Path(f.name)
        self.mapped = np.memmap(path, dtype=np.uint8, mode="w+", shape=shape)
        try:
            path.unlink()  # POSIX: the mapping outlives the name
        except OSError:  # Windows keeps a mapped file: deleted when the process ends, if it can be
            import atexit

            atexit.register(path.unlink, missing_ok=True)
        return torch.from_numpy(self.mapped)

    @functools.cached_property
    def sample_features(self) -> Tensor:
        """Features of :attr:`samples`. Kept on disk while computed (in the output folder, else the cache
        directory; :mod:`.partial`), so that the same evaluation, interrupted, resumes where it stopped."""
        if self._features is not None:  # a feature function of the caller's: nothing to name it by
            return self.features_of(self.samples, desc="sample features")
        images = self.samples
        key = partial.digest(images, batch_size=self.settings.batch_size, network=fidlib.INCEPTION_SHA1,
                             precision=self.feature_precision, device=torch.device(self.device).type)
        kept = partial.PartialFeatures(self.out_dir if self.out_dir is not None else fidlib.cache_dir(), key,
                                       len(images))
        return self._kept_features(kept, images, "sample features")

    def _kept_features(self, kept: partial.PartialFeatures, images: Tensor, what: str, *,
                       hold: bool = True) -> Tensor:
        """Features of ``images``, resumed from ``kept`` and kept there if the work stops. Complete, ``hold`` keeps
        them until :meth:`finish` if they took longer than ``partial.KEEP_EVERY_S`` (a stop after them then loses
        nothing), and removes the file otherwise; without ``hold`` the caller removes it once it has stored them
        elsewhere. What it says goes to stderr, also with --quiet (not progress)."""
        done = kept.load()
        if done is not None:
            _say(f"resuming the {what} at {len(done)} of {len(images)} ({kept.path})")
        t0 = time.perf_counter()
        try:
            features = self.features_of(images, desc=what, done=done, keep=kept.keep)
        except BaseException:
            if kept.path.is_file():
                _say(f"the {what} computed so far are in {kept.path}: the same command resumes there")
            raise
        if not hold:
            return features
        if time.perf_counter() - t0 > partial.KEEP_EVERY_S:
            kept.keep(features)
            self._kept.append(kept)
        elif kept not in self._kept:
            kept.remove()
        return features

    @functools.cached_property
    def reference(self) -> Tensor:
        """A fixed subset (the same every time) of the real images of ``ref_split``, uint8 on the CPU."""
        split, limit = self.ref_split, self.settings.ref_images
        images = self.data.train if split == "train" else self.data.test
        if len(images) == 0:
            raise MetricError(f"the {split} split of {self.data.name} is empty")
        if len(images) <= limit:
            return images if isinstance(images, Tensor) else Rows(images, torch.arange(len(images)))
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:limit]
        return Rows(images, idx.sort().values)

    @functools.cached_property
    def reference_features(self) -> Tensor:
        """Inception features of :attr:`reference`, cached on disk (custom feature functions are not cached)."""
        ref = self.reference
        if self._features is not None:
            return self.features_of(ref, desc=f"real {self.ref_split} features")
        key = fidlib.stats_key(data=self.data_id, split=self.ref_split, n=len(ref),
                               image_size=self.image_size, in_channels=self.in_channels,
                               precision=self.feature_precision, device=torch.device(self.device).type)
        path = fidlib.cache_dir() / f"features-{key}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        # two evaluations started together (two runs scored side by side) compute these once: the second waits
        say = (lambda line: print(f"introvae: {line}", file=sys.stderr)) if self.show_progress else None
        with exclusive(f"features-{key}", say=say, waiting=f"waiting for another process that is computing the "
                                                           f"features of the real {self.ref_split} images"):
            if path.is_file():  # made while this process waited
                return torch.load(path, weights_only=True)
            kept = partial.PartialFeatures(path.parent, key, len(ref), name="real-features")
            f = self._kept_features(kept, ref, f"real {self.ref_split} features", hold=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")  # never a file another process is writing
            torch.save(f, tmp)
            tmp.replace(path)
            kept.remove()  # the cache holds them now
        return f

    @property
    def held_out(self) -> Tensor:
        """The images reconstructions are scored on: the held-out split (the training split if it is empty)."""
        return self.data.test[:] if len(self.data.test) else self.data.train[:]

    def features_of(self, images: Tensor, *, desc: str, done: Tensor | None = None,
                    keep: Callable[[Tensor], None] | None = None) -> Tensor:
        """Feature vectors (float32, CPU) of uint8 images (N, C, H, W), ``batch_size`` at a time on the device;
        ``done`` and ``keep`` as :func:`.fid.inception_features` (``done`` covers whole batches)."""
        b = self.settings.batch_size
        first = len(done) if done is not None else 0
        if first % b and first != len(images):
            raise MetricError(f"features kept for {first} images, not whole batches of {b}")
        chunks = (to_float(images[k:k + b].to(self.device)) for k in range(first, len(images), b))
        return fidlib.inception_features(chunks, self.feature_fn, total=len(images), desc=desc,
                                         show_progress=self.show_progress, done=done, keep=keep).float()
