"""mim: masked-autoencoding pretraining for any modality."""
from mim._compat import patch_torchvision

patch_torchvision()  # before anything imports torchvision / timm
# installs the registries' lookup hook: the first lookup loads the built-ins and plugins
from mim.plugins import load_plugins
from mim.models.model import MAEOutput, MaskedAutoencoder
from mim.models.factory import create_model, list_models
from mim.convert import load_pretrained

__version__ = "0.1.0"
__all__ = ["MaskedAutoencoder", "MAEOutput", "create_model", "list_models", "load_plugins",
           "load_pretrained"]
