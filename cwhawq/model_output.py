"""Where a classifier's logits are in what its forward returns, so that models whose output is a tuple, a dict or a
Hugging Face ``ModelOutput`` run without a wrapper.

Every part of cwhawq (traces, evaluation, export) calls ``model(x)`` and expects the (batch, classes) logits. A
model returning more than that is changed, on a copy, to return only the logits: a traced one (BatchNorm folding
makes a ``torch.fx.GraphModule``) by editing its graph's output, any other by a forward hook (`LogitsSelector`).
Both survive pickling, so the exported ``quantized_model.pt`` returns the logits that were measured. The rest of
the output is still computed, so layers that only feed it stay layers (their traces are zero).
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn

from cwhawq.data import DataSplits
from cwhawq.errors import CwhawqError

#: An index into a tuple/list output or a key of a dict-like output.
OutputKey = int | str

#: The key Hugging Face classifiers (and most dict-returning models) use for the logits.
LOGITS_KEY = "logits"


class LogitsSelector:
    """A forward hook that replaces a model's output by ``output[key]``; module-level so that the model pickles."""

    def __init__(self, key: OutputKey) -> None:
        self.key = key

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> torch.Tensor:
        return output[self.key]


def _is_logits(value: Any, shape: tuple[int, int]) -> bool:
    return isinstance(value, torch.Tensor) and tuple(value.shape) == shape


def logits_key(output: Any, shape: tuple[int, int]) -> OutputKey | None:
    """Where the logits of the given (batch, classes) ``shape`` are in ``output``: None for a tensor (the output is
    the logits), else the key to select.

    A dict-like output's "logits" entry wins, a tuple's or list's first element wins (torchvision's auxiliary heads
    and Hugging Face's ``return_dict=False`` put the logits first); otherwise the one entry of that shape. Raises
    `CwhawqError` when no entry or several entries of that shape could be the logits.
    """
    if isinstance(output, torch.Tensor):
        if tuple(output.shape) != shape:
            raise CwhawqError(
                f"outputs {tuple(output.shape)} for {shape[0]} samples, expected {shape} logits: check its "
                "number of classes"
            )
        return None
    if isinstance(output, Mapping):
        entries: Sequence[tuple[OutputKey, Any]] = list(output.items())
        preferred: OutputKey = LOGITS_KEY
    elif isinstance(output, (tuple, list)):
        entries, preferred = list(enumerate(output)), 0
    else:
        raise CwhawqError(f"outputs a {type(output).__name__}, expected {shape} logits")
    matching = [key for key, value in entries if _is_logits(value, shape)]
    if preferred in matching:
        return preferred
    if len(matching) == 1:
        return matching[0]
    found = ", ".join(
        f"[{key!r}] {tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}"
        for key, value in entries[:6]
    )
    reason = f"{len(matching)} entries" if matching else "no entry"
    raise CwhawqError(
        f"outputs a {type(output).__name__} with {reason} of shape {shape} ({found}); return the logits tensor "
        "alone, or under the key 'logits'"
    )


def find_logits(model: nn.Module, data: DataSplits, name: str) -> OutputKey | None:
    """Run ``model`` on two validation samples of ``data`` and return where its logits are (`logits_key`).

    Raises `CwhawqError` naming ``name``, the problem and the fix when the model has weights other than float32 or
    NaN or infinite ones, does not run on the data, or returns no recognisable logits.
    """
    other_dtypes = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point()} - {"torch.float32"})
    if other_dtypes:
        raise CwhawqError(
            f"model {name!r} has {', '.join(other_dtypes)} weights; cwhawq measures float32 models: return "
            "model.float() from your builder"
        )
    tensors = [*model.named_parameters(), *model.named_buffers()]
    broken = [key for key, tensor in tensors if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        listed = ", ".join(broken[:3]) + (", ..." if len(broken) > 3 else "")
        raise CwhawqError(
            f"model {name!r} holds NaN or infinite values in {listed}; check the checkpoint or the training that "
            "produced it"
        )
    param = next(model.parameters(), None)
    sample = data.val.x[:2]
    with torch.no_grad():
        try:
            output = model(sample.to(param.device) if param is not None else sample)
        except Exception as exc:  # any shape or dtype mismatch inside the user's forward
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = (
                "; integer inputs are passed as token ids (int64): store other inputs as floats, e.g. images as "
                "x.astype('float32') / 255"
                if not data.val.x.is_floating_point()
                else ""
            )
            raise CwhawqError(
                f"model {name!r} fails on {data.name} inputs of shape {data.input_shape}: {message}{hint}"
            ) from None
    try:
        return logits_key(output, (len(sample), data.num_classes))
    except CwhawqError as exc:
        raise CwhawqError(f"model {name!r} {exc}") from None


def logits_only(model: nn.Module, data: DataSplits, name: str) -> nn.Module:
    """``model`` itself when it returns the logits tensor, else a copy whose forward returns only the logits
    (`LogitsSelector`), with a warning that says which entry was taken."""
    key = find_logits(model, data, name)
    if key is None:
        return model
    warnings.warn(
        f"model {name!r} returns more than its logits: cwhawq uses output[{key!r}] as the logits, and the exported "
        "model returns that tensor alone",
        stacklevel=2,
    )
    selecting = copy.deepcopy(model)
    if isinstance(selecting, fx.GraphModule):
        _return_in_graph(selecting, key)  # pickling a GraphModule keeps its code but drops its hooks
    else:
        selecting.register_forward_hook(LogitsSelector(key))
    return selecting


def _return_in_graph(graph_module: fx.GraphModule, key: OutputKey) -> None:
    graph = graph_module.graph
    output = next(node for node in graph.nodes if node.op == "output")
    returned = output.args[0]
    if isinstance(returned, (dict, tuple, list)):  # a literal of nodes: return the entry's node
        output.args = (returned[key],)
    else:  # a node that yields the container (e.g. a leaf module's call)
        with graph.inserting_before(output):
            output.args = (graph.call_function(operator.getitem, (returned, key)),)
    graph.lint()
    graph_module.recompile()
