"""reinforced_data: store augmentations and teacher labels once, replay them bit-exactly."""
from .ensemble import (AdaptiveEnsembleHead, EarlyStopping, adabelief, bagging_split, fit_combiner,
                       fit_weak_learner, stratified_split, weighted_f1)
from .policy import PRESETS, RA_OPS, Policy
from .reinforce import reinforce
from .replay import compiled_available, replay
from .store import ReinforcementFile, ReinforcementWriter, inspect_file, merge
from .teachers import TeacherEnsemble

__version__ = "0.1.0"
__all__ = [
    "Policy", "PRESETS", "RA_OPS", "replay", "compiled_available",
    "ReinforcementFile", "ReinforcementWriter", "merge", "inspect_file", "TeacherEnsemble", "reinforce",
    "AdaptiveEnsembleHead", "bagging_split", "stratified_split", "adabelief", "weighted_f1", "EarlyStopping",
    "fit_weak_learner", "fit_combiner", "__version__",
]
