"""PyTorch state dicts (from ``.safetensors``, from ``.pt`` / ``.bin`` read natively by `torch_zip`, or through
``torch.load(weights_only=True)`` for code-free pickles that hold more than a state dict) as the neutral model.

``torch.nn.LSTM`` / ``GRU`` / ``RNN`` modules are recognised by their parameter names and shapes:
``<module>.weight_ih_l{k}[_reverse]``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` and, for an LSTM with
``proj_size``, ``weight_hr_l{k}``. Each becomes a container layer (class ``torch.nn.LSTM``...) named by its module
path, holding one leaf per layer and direction (``l0``, ``l0_reverse``, ``l1``...) of class ``TorchLSTM`` /
``TorchGRU`` / ``TorchRNN``, which `gates.split` splits. ``torch.nn.LSTMCell`` / ``GRUCell`` / ``RNNCell`` store the
same arrays without the ``_l{k}`` suffix: a container of class ``torch.nn.LSTMCell`` ... holding one such leaf,
``cell``. Other parameters are grouped by module path and listed raw.
Here a pickled file is never opened without torch: only ``torch.load(..., weights_only=True)`` reads it.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from ..errors import InspectError, UnsupportedFile
from ..model import Layer, ModelFile, Tensor

_RNN_PARAM = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<role>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
                        r"_l(?P<k>\d+)(?P<rev>_reverse)?$")
#: ``torch.nn.LSTMCell`` / ``GRUCell`` / ``RNNCell``: the same arrays without the layer suffix.
_CELL_PARAM = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<role>weight_ih|weight_hh|bias_ih|bias_hh)$")
FAMILY_BY_GATES = {4: "LSTM", 3: "GRU", 1: "RNN"}
LEAF_CLASS = {"LSTM": "TorchLSTM", "GRU": "TorchGRU", "RNN": "TorchRNN"}


def build_model(path: str, kind: str, tensors: list[Tensor], metadata: Mapping[str, str] | None = None) -> ModelFile:
    """The neutral model of a flat state dict."""
    root = Layer(name="model", class_name="StateDict", path=())
    model = ModelFile(path=path, kind=kind, root=root, has_config=False)
    groups: dict[str, dict[tuple[int, bool], dict[str, Tensor]]] = {}
    cells: dict[str, dict[str, Tensor]] = {}
    others: dict[str, list[Tensor]] = {}
    # (kind, prefix) in first-seen order; dicts and sets keep this linear (a list here was quadratic: 40,000
    # one-tensor prefixes took minutes)
    order: dict[tuple[str, str], None] = {}
    for tensor in tensors:
        match = _RNN_PARAM.match(tensor.name)
        if match:
            prefix = match["prefix"] or ""
            slot = groups.setdefault(prefix, {}).setdefault((int(match["k"]), bool(match["rev"])), {})
            slot[match["role"]] = tensor
            order.setdefault(("rnn", prefix))
        elif match := _CELL_PARAM.match(tensor.name):
            prefix = match["prefix"] or ""
            cells.setdefault(prefix, {})[match["role"]] = tensor
            order.setdefault(("cell", prefix))
        else:
            prefix, _, _ = tensor.name.rpartition(".")
            others.setdefault(prefix, []).append(tensor)
            order.setdefault(("other", prefix))
    cell_modules = {}
    for prefix, params in cells.items():
        cell_modules[prefix] = _cell_module(prefix, params, others.get(prefix, []), model.warnings)
        if cell_modules[prefix] is None:  # not a cell: its parameters are listed raw with the others of the prefix
            others.setdefault(prefix, []).extend(params.values())
    listed_groups: set[str] = set()
    for what, prefix in order:
        if what == "rnn":
            module = _rnn_module(prefix, groups[prefix], model.warnings)
            if module is not None:
                root.children.append(module)
                continue
            # not a recognisable RNN module: its parameters are listed raw with the other ones of that prefix
            listed = others.setdefault(prefix, [])
            listed.extend(t for slot in groups[prefix].values() for t in slot.values())
        if what == "cell" and cell_modules[prefix] is not None:
            root.children.append(cell_modules[prefix])
            continue
        name = prefix or "(top level)"
        if prefix in others and name not in listed_groups:
            listed_groups.add(name)
            for t in others[prefix]:
                t.name = t.name[len(prefix) + 1:] if prefix else t.name
            root.children.append(Layer(name=name, class_name="parameters", path=(name,), weights=others[prefix]))
    model.backend = "torch"
    if metadata and metadata.get("format") not in (None, "pt"):
        model.warnings.append(f"safetensors metadata says format={metadata['format']!r}; read as a PyTorch state dict")
    return model


def _rnn_module(prefix: str, slots: dict[tuple[int, bool], dict[str, Tensor]], warnings: list[str]) -> Layer | None:
    first = slots.get((0, False), {})
    ih, hh, hr = first.get("weight_ih"), first.get("weight_hh"), first.get("weight_hr")
    label = prefix or "(top level)"
    if ih is None or hh is None or len(ih.shape) != 2 or len(hh.shape) != 2:
        warnings.append(f"{label}: parameters named like torch.nn.LSTM/GRU/RNN but without weight_ih_l0 / "
                        "weight_hh_l0 of rank 2; listed raw")
        return None
    hidden = hr.shape[1] if hr is not None and len(hr.shape) == 2 else hh.shape[1]
    gates = hh.shape[0] // hidden if hidden else 0
    family = FAMILY_BY_GATES.get(gates) if hidden and hh.shape[0] == gates * hidden else None
    if family is None or (hr is not None and family != "LSTM"):
        warnings.append(f"{label}: weight_hh_l0 {hh.shape} does not hold 4, 3 or 1 gates of {hidden} units; listed raw")
        return None
    layers = 1 + max(k for k, _ in slots)
    bidirectional = any(rev for _, rev in slots)
    proj = hr.shape[0] if hr is not None else 0
    has_bias = "bias_ih" in first
    name = prefix or family.lower()
    container = Layer(name=name, class_name=f"torch.nn.{family}", path=(name,),
                      config={"input_size": ih.shape[1], "hidden_size": hidden, "num_layers": layers,
                              "bidirectional": bidirectional, "proj_size": proj, "bias": has_bias})
    out_size = (proj or hidden) * (2 if bidirectional else 1)
    for k in range(layers):
        for rev in ((False, True) if bidirectional else (False,)):
            slot = slots.get((k, rev))
            leaf_name = f"l{k}" + ("_reverse" if rev else "")
            expected = {"weight_ih": (gates * hidden, ih.shape[1] if k == 0 else out_size),
                        "weight_hh": (gates * hidden, proj or hidden)}
            if has_bias:
                expected.update({"bias_ih": (gates * hidden,), "bias_hh": (gates * hidden,)})
            if proj:
                expected["weight_hr"] = (proj, hidden)
            got = {role: t.shape for role, t in (slot or {}).items()}
            if got != expected:
                warnings.append(f"{label}: {leaf_name} holds {got or 'nothing'}, but a torch.nn.{family}("
                                f"hidden_size={hidden}) needs {expected}; listed raw")
                return None
            weights = [slot[role] for role in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
                       if role in slot]
            container.children.append(Layer(
                name=leaf_name, class_name=LEAF_CLASS[family], path=(name, leaf_name), weights=weights,
                config={"units": hidden, "layer": k, "direction": "reverse" if rev else "forward",
                        "proj_size": proj, "use_bias": has_bias}))
    for leaf in container.children:  # recognised: name each tensor by its parameter name inside the module
        for tensor in leaf.weights:
            tensor.name = tensor.name[len(prefix) + 1:] if prefix else tensor.name
    return container


def _cell_module(prefix: str, params: dict[str, Tensor], beside: list[Tensor], warnings: list[str]) -> Layer | None:
    """A ``torch.nn.LSTMCell`` / ``GRUCell`` / ``RNNCell``: a container of class ``torch.nn.LSTMCell`` ... holding
    one leaf ``cell`` of class ``TorchLSTM`` ..., which splits like a one-layer module (a cell stepped over a
    sequence is that module). Anything else under the prefix keeps the parameters raw."""
    ih, hh = params.get("weight_ih"), params.get("weight_hh")
    label = prefix or "(top level)"
    if ih is None or hh is None or beside or len(ih.shape) != 2 or len(hh.shape) != 2:
        if ih is not None and hh is not None and not beside:
            warnings.append(f"{label}: weight_ih {ih.shape} / weight_hh {hh.shape} are not matrices; listed raw")
        return None
    hidden = hh.shape[1]
    gates = hh.shape[0] // hidden if hidden else 0
    family = FAMILY_BY_GATES.get(gates) if hidden and hh.shape[0] == gates * hidden else None
    expected = {"weight_ih": (gates * hidden, ih.shape[1]), "weight_hh": (gates * hidden, hidden)}
    if "bias_ih" in params or "bias_hh" in params:
        expected.update({"bias_ih": (gates * hidden,), "bias_hh": (gates * hidden,)})
    got = {role: t.shape for role, t in params.items()}
    if family is None or got != expected:
        warnings.append(f"{label}: parameters named like torch.nn.LSTMCell/GRUCell/RNNCell ({got}) do not hold 4, 3 "
                        f"or 1 gates of {hidden} units with matching shapes; listed raw")
        return None
    name = prefix or f"{family.lower()}_cell"
    has_bias = "bias_ih" in params
    container = Layer(name=name, class_name=f"torch.nn.{family}Cell", path=(name,),
                      config={"input_size": ih.shape[1], "hidden_size": hidden, "num_layers": 1,
                              "bidirectional": False, "proj_size": 0, "bias": has_bias})
    weights = [params[role] for role in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if role in params]
    for tensor in weights:
        tensor.name = tensor.name[len(prefix) + 1:] if prefix else tensor.name
    container.children.append(Layer(
        name="cell", class_name=LEAF_CLASS[family], path=(name, "cell"), weights=weights,
        config={"units": hidden, "layer": 0, "direction": "forward", "proj_size": 0, "use_bias": has_bias}))
    return container


# ------------------------------------------------------------------------------------------- torch.load files


def read_torch_file(path: str, label: str) -> ModelFile:
    """A ``.pt`` / ``.pth`` / ``.bin`` file through ``torch.load(weights_only=True)``; torch is required."""
    try:
        import torch
    except ImportError:
        raise UnsupportedFile(
            "a PyTorch checkpoint (pickle): reading it needs torch (pip install 'lstm-inspect[torch]'), which loads "
            "it with weights_only=True; lstm-inspect never unpickles files itself. Or save the state dict as "
            ".safetensors, which needs nothing", label) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for refused or broken files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InspectError(f"torch.load(weights_only=True) refused the file: {first} (a whole pickled module? "
                           "save model.state_dict() instead)", label) from exc
    flat: dict[str, Any] = {}
    _flatten(loaded, "", flat, torch)
    if not flat:
        raise UnsupportedFile("the PyTorch file holds no tensors (expected a state dict)", label)
    prefix = _common_wrapper(flat)
    tensors = []
    for name, value in flat.items():
        array = _to_numpy(value, torch)
        tensors.append(Tensor(name=name[len(prefix):], shape=tuple(array.shape), dtype=str(array.dtype),
                              source=name, _load=lambda a=array: a))
    return build_model(label, "torch-state-dict", tensors)


def _flatten(value: Any, prefix: str, out: dict[str, Any], torch: Any) -> None:
    if isinstance(value, torch.Tensor):
        out[prefix.rstrip(".")] = value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}{key}.", out, torch)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}{i}.", out, torch)


def _common_wrapper(flat: dict[str, Any]) -> str:
    """A checkpoint's single wrapper key (``state_dict.``, ``model.``) when every tensor sits below it."""
    heads = {name.split(".", 1)[0] for name in flat}
    if len(heads) == 1 and all("." in name for name in flat):
        head = heads.pop()
        if head in ("state_dict", "model", "model_state_dict", "module", "net"):
            return head + "."
    return ""


def _to_numpy(value: Any, torch: Any) -> np.ndarray:
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.numpy()


def is_torch_zip(names: list[str]) -> bool:
    """``torch.save`` writes a zip whose members sit under one folder: ``<name>/data.pkl``, ``<name>/data/0``..."""
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names) and "config.json" not in names


#: Names under which torch.load (which unpickles any non-zip file) meets pickles.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def is_pickle(head: bytes, name: str = "") -> bool:
    """A pickle stream: protocol 2-5 by its PROTO opcode (as legacy ``torch.save`` files start), or protocol 0/1
    (no header: any opcode) in a file named like a PyTorch or pickle file."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    import pickletools

    return bool(head) and name.lower().endswith(PICKLE_SUFFIXES) and any(
        head[:1] == op.code.encode("latin-1") for op in pickletools.opcodes)
