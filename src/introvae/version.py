"""The package version (checkpoints and exports record it)."""

__version__ = "0.7.18"
