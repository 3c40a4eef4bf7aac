"""Imports the core's own registrations (tokenizers, masks, backends); model presets come with
the modalities."""
import mim.engine.backends.torch  # noqa: F401
import mim.engine.backends.deepspeed.backend  # noqa: F401  (imports deepspeed only when used)
import mim.engine.backends.xla.backend  # noqa: F401  (imports torch_xla only when used)
import mim.masking  # noqa: F401
import mim.models.tokenizers  # noqa: F401
import mim.models.tokenizers.bands  # noqa: F401  (group2d, channel2d, spectral2d)
import mim.trackers  # noqa: F401  (imports mlflow / wandb only when chosen)
