"""The video modality (being built): space-time presets are registered here."""
from mim.modalities.video import presets  # noqa: F401  (videomae_*, maest_* model presets)
