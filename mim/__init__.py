"""mim: masked-autoencoding pretraining for any modality."""
from mim import _compat  # noqa: F401  (must run before anything imports torchvision / timm)
from mim.model import MAEOutput, MaskedAutoencoder
from mim.models import create_model, list_models
from mim.convert import load_pretrained
from mim.registry import load_plugins

__version__ = "0.1.0"
__all__ = ["MaskedAutoencoder", "MAEOutput", "create_model", "list_models", "load_plugins",
           "load_pretrained"]
