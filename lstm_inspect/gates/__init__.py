"""Gate layouts as data: the per-gate split of recurrent weights (`split.py`), activations, and conversion to
other frameworks' layouts (`conversion.py`). May import only the neutral model (`model`, `errors`) and numpy.
`gates.split` is the function re-exported here; take the module's other names with ``from .split import``."""
from __future__ import annotations

from .split import (
    BLOCK_KINDS,
    CUDNN_CLASSES,
    LAYOUTS,
    NATIVE_LAYOUTS,
    TF1_LAYOUTS,
    Block,
    GateLayout,
    GateSplit,
    NativeLayout,
    family,
    split,
)

__all__ = ["BLOCK_KINDS", "CUDNN_CLASSES", "LAYOUTS", "NATIVE_LAYOUTS", "TF1_LAYOUTS", "Block", "GateLayout",
           "GateSplit", "NativeLayout", "family", "split"]
