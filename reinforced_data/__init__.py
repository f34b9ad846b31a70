"""reinforced_data: store augmentations and teacher labels once, replay them bit-exactly."""
from .policy import PRESETS, RA_OPS, Policy
from .replay import compiled_available, replay

__version__ = "0.1.0"
__all__ = ["Policy", "PRESETS", "RA_OPS", "replay", "compiled_available", "__version__"]
