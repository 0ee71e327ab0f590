"""IntroVAE: Introspective Variational Autoencoders (Huang et al., NeurIPS 2018)."""

__version__ = "0.1.0"

from .config import PRESETS, Config, ConfigError, get_preset  # noqa: E402
from .model import IntroVAE  # noqa: E402

__all__ = ["Config", "ConfigError", "IntroVAE", "PRESETS", "get_preset", "__version__", "train", "load_model"]


def train(config: Config, run_dir, **kwargs):
    """Train ``config`` into ``run_dir``; returns the run directory. See :class:`introvae.trainer.Trainer`."""
    from .trainer import Trainer

    return Trainer(config, run_dir, **kwargs).train()


def load_model(source, *, ema: bool = True) -> IntroVAE:
    """Load a model from a run directory, a checkpoint file or an exported model directory
    (with the averaged generator of a run trained with ``--ema``, unless ``ema`` is False)."""
    from .trainer import load_model as _load

    return _load(source, ema=ema)
