"""Configuration: typed schemas, Hydra composition, one-line errors."""
from mim.config.errors import ConfigError

__all__ = ["ConfigError"]
