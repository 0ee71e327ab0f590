"""Evaluation metrics: FID, MS-SSIM diversity, reconstruction quality, nearest neighbours."""

from .fid import frechet_distance, inception_features, load_inception
from .msssim import ms_ssim, ms_ssim_settings, sample_diversity
from .reconstruction import reconstruction_metrics

__all__ = ["frechet_distance", "inception_features", "load_inception", "ms_ssim", "ms_ssim_settings",
           "sample_diversity", "reconstruction_metrics"]
