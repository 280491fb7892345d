"""lstm-inspect: read saved Keras models without TensorFlow and split recurrent weights into gates."""
from __future__ import annotations

__version__ = "0.1.0"

from .api import example_path, export, export_arrays, inspect  # noqa: E402
from .errors import ExitCode, InspectError  # noqa: E402
from .gates import LAYOUTS, GateSplit, split as split_gates  # noqa: E402
from .model import Layer, ModelFile, Tensor  # noqa: E402
from .readers import open_model  # noqa: E402
from .stats import Stats, compute as compute_stats  # noqa: E402

# The modules forward, verify and explain share their names with the API functions below. Import the modules
# first (so they are in sys.modules), then bind the names to the functions: `lstm_inspect.forward(...)` is the
# function, `from lstm_inspect.forward import run` still reaches the module.
from . import explain as _explain_module, forward as _forward_module, verify as _verify_module  # noqa: E402,F401
from .api import explain, forward, verify  # noqa: E402

__all__ = [
    "open_model", "inspect", "export", "export_arrays", "forward", "verify", "explain", "example_path", "split_gates", "compute_stats",
    "ModelFile", "Layer", "Tensor", "GateSplit", "Stats", "LAYOUTS", "InspectError", "ExitCode",
]
