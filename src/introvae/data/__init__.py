"""Image data: sources (built-in faces, IDX, folders, zips, LMDB), data sets, and the batch order."""

from ..errors import DataError
from .batches import batches, epoch_plan
from .images import DECODE_ERRORS, IMAGE_EXTENSIONS, read_image, save_image, to_float, to_uint8
from .sets import ImageSet, LazyImages, load

__all__ = ["DataError", "DECODE_ERRORS", "IMAGE_EXTENSIONS", "ImageSet", "LazyImages", "batches", "epoch_plan",
           "load", "read_image", "save_image", "to_float", "to_uint8"]
