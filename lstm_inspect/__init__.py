"""lstm-inspect: read saved Keras models without TensorFlow and split recurrent weights into gates.

The public names below are loaded on first use, so that importing the package (and starting the CLI) costs no
numpy or h5py import until a command needs them.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: public name -> (module, attribute)
_EXPORTS = {
    "open_model": ("render.notebook", "open_model"),
    "inspect": ("api", "inspect"),
    "export": ("api", "export"),
    "export_arrays": ("api", "export_arrays"),
    "export_layout": ("api", "export_layout"),
    "convert": ("api", "convert"),
    "forward": ("api", "forward"),
    "verify": ("api", "verify"),
    "explain": ("api", "explain"),
    "example_path": ("api", "example_path"),
    "write_report": ("render.pictures", "report"),
    "write_plots": ("render.pictures", "plot"),
    "block_figure": ("render.pictures", "block_figure"),
    "diff": ("render.notebook", "diff"),
    "split_gates": ("render.notebook", "split_gates"),
    "compute_stats": ("analysis.stats", "compute"),
    "ModelFile": ("model", "ModelFile"),
    "Layer": ("model", "Layer"),
    "Tensor": ("model", "Tensor"),
    "GateSplit": ("gates", "GateSplit"),
    "Stats": ("analysis.stats", "Stats"),
    "LAYOUTS": ("gates", "LAYOUTS"),
    "InspectError": ("errors", "InspectError"),
    "ExitCode": ("errors", "ExitCode"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lstm_inspect' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
