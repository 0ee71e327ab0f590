"""A data set split into training and held-out images: the one thing every reader of data returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor

from ..errors import DataError

if TYPE_CHECKING:  # sets imports this module
    from .sets import LazyImages

HOLDOUT_FRACTION = 0.1  # the share of a data set without its own test split held out (the default everywhere)


@dataclass
class ImageSet:
    """Training and held-out images: uint8 tensors (N, C, H, W), or :class:`LazyImages` for large data."""

    name: str
    train: Tensor | "LazyImages"
    test: Tensor | "LazyImages"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    official_test: bool = False  # the held-out images are the data set's own test split (IDX), not our 10 %

    def __post_init__(self) -> None:
        if len(self.train) == 0:
            raise DataError(f"{self.name}: no training images")
