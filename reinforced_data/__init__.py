"""reinforced_data: store augmentations and teacher labels once, replay them bit-exactly."""
from .policy import Policy

__version__ = "0.1.0"
__all__ = ["Policy", "__version__"]
