"""slamags_core: a small, tested reproduction of SLAM-AGS (Acerbis et al., ISBI 2026).

Slide-label aware multi-task pretraining with adaptive gradient surgery for computational
cytology, on a synthetic bone-marrow cell generator. Notebooks in ``notebooks/`` import
this package; it is the single source of truth.
"""
from slamags_core.config import Preset, get_preset
from slamags_core.utils import get_device, set_seed

__all__ = ["Preset", "get_preset", "get_device", "set_seed"]
__version__ = "0.1.0"
