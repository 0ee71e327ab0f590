"""IntroVAE: Introspective Variational Autoencoders (Huang et al., NeurIPS 2018)."""

from .config import ModelConfig, TrainConfig
from .errors import ConfigError, UserError
from .presets import PRESETS, get_preset
from .version import __version__

__all__ = ["ConfigError", "IntroVAE", "ModelConfig", "PRESETS", "TrainConfig", "UserError", "__version__",
           "get_preset", "load_model", "train"]


def __getattr__(name):
    # The networks need torch; importing them lazily keeps `introvae --help` and config work light.
    if name == "IntroVAE":
        from .model import IntroVAE

        return IntroVAE
    raise AttributeError(f"module 'introvae' has no attribute {name!r}")


def train(config: TrainConfig, run_dir, **kwargs):
    """Train ``config`` into ``run_dir``; returns the run directory. See :class:`introvae.trainer.Trainer`."""
    from .trainer import Trainer

    return Trainer(config, run_dir, **kwargs).train()


def load_model(source, *, ema: bool = True, device="auto"):
    """Load a model onto ``device`` from a run directory, a checkpoint file or an exported model directory
    (with the averaged generator of a run trained with ``--ema``, unless ``ema`` is False)."""
    from .runs import load_model as _load

    return _load(source, ema=ema, device=device)
