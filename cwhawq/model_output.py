"""Where a classifier's logits are in what its forward returns, so that models whose output is a tuple, a dict or a
Hugging Face ``ModelOutput``, and binary classifiers with one logit per sample, run without a wrapper.

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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LogitsLocation:
    """How to get (batch, classes) logits from a model's output that is not already them.

    ``key`` selects an entry of a tuple, list or dict output (None: the output itself). ``single_logit`` marks a
    binary classifier's one logit per sample, shape (batch,) or (batch, 1), which `two_class_logits` expands.
    """

    key: OutputKey | None = None
    single_logit: bool = False

    def describe(self) -> str:
        """How the logits are taken, for messages."""
        taken = "the output" if self.key is None else f"output[{self.key!r}]"
        return f"{taken}, a single logit z expanded to the logits (0, z)," if self.single_logit else taken


def two_class_logits(logit: torch.Tensor) -> torch.Tensor:
    """The (batch, 2) logits (0, z) of a binary classifier's single logit z: their softmax is (1 - sigmoid(z),
    sigmoid(z)), so cross-entropy on them is the binary cross-entropy the model was trained with."""
    column = logit.reshape(-1, 1)  # no len(): torch.fx retraces this when a pickled GraphModule is loaded
    return torch.cat([torch.zeros_like(column), column], dim=1)


class LogitsSelector:
    """A forward hook that returns the logits at a `LogitsLocation`; module-level so that the model pickles."""

    def __init__(self, location: LogitsLocation) -> None:
        self.location = location

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> torch.Tensor:
        value = output if self.location.key is None else output[self.location.key]
        return two_class_logits(value) if self.location.single_logit else value


def _has_shape(value: Any, shapes: Sequence[tuple[int, ...]]) -> bool:
    return isinstance(value, torch.Tensor) and tuple(value.shape) in shapes


def _single_logit_shapes(shape: tuple[int, int]) -> list[tuple[int, ...]]:
    batch, classes = shape
    return [(batch,), (batch, 1)] if classes == 2 else []


def logits_location(output: Any, shape: tuple[int, int]) -> LogitsLocation | None:
    """Where the logits of the given (batch, classes) ``shape`` are in ``output``: None when the output is them.

    A dict-like output's "logits" entry wins, a tuple's or list's first element wins (torchvision's auxiliary heads
    and Hugging Face's ``return_dict=False`` put the logits first); otherwise the one entry of that shape. With two
    classes, a single logit per sample (binary cross-entropy models) is taken where no entry has two. Raises
    `CwhawqError` when no entry or several entries could be the logits.
    """
    single = _single_logit_shapes(shape)
    if isinstance(output, torch.Tensor):
        if tuple(output.shape) == shape:
            return None
        if tuple(output.shape) in single:
            return LogitsLocation(single_logit=True)
        raise CwhawqError(
            f"outputs {tuple(output.shape)} for {shape[0]} samples, expected {shape} logits: check its number of "
            "classes"
        )
    if isinstance(output, Mapping):
        entries: Sequence[tuple[OutputKey, Any]] = list(output.items())
        preferred: OutputKey = LOGITS_KEY
    elif isinstance(output, (tuple, list)):
        entries, preferred = list(enumerate(output)), 0
    else:
        raise CwhawqError(f"outputs a {type(output).__name__}, expected {shape} logits")
    for shapes, single_logit in (([shape], False), (single, True)):
        matching = [key for key, value in entries if _has_shape(value, shapes)]
        if preferred in matching:
            return LogitsLocation(preferred, single_logit)
        if len(matching) == 1:
            return LogitsLocation(matching[0], single_logit)
        if matching:
            break
    found = ", ".join(
        f"[{key!r}] {tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}"
        for key, value in entries[:6]
    )
    reason = f"{len(matching)} entries" if matching else "no entry"
    raise CwhawqError(
        f"outputs a {type(output).__name__} with {reason} of shape {shape} ({found}); return the logits tensor "
        "alone, or under the key 'logits'"
    )


def find_logits(model: nn.Module, data: DataSplits, name: str) -> LogitsLocation | None:
    """Run ``model`` on two validation samples of ``data`` and return where its logits are (`logits_location`).

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
        return logits_location(output, (len(sample), data.num_classes))
    except CwhawqError as exc:
        raise CwhawqError(f"model {name!r} {exc}") from None


def logits_only(model: nn.Module, data: DataSplits, name: str) -> nn.Module:
    """``model`` itself when it returns the logits tensor, else a copy whose forward returns only the logits
    (`find_logits`), with a warning that says how they are taken."""
    location = find_logits(model, data, name)
    if location is None:
        return model
    warnings.warn(
        f"model {name!r} does not return (batch, classes) logits alone: cwhawq uses {location.describe()} as the "
        "logits, and the exported model returns them",
        stacklevel=2,
    )
    selecting = copy.deepcopy(model)
    if isinstance(selecting, fx.GraphModule):
        _return_in_graph(selecting, location)  # pickling a GraphModule keeps its code but drops its hooks
    else:
        selecting.register_forward_hook(LogitsSelector(location))
    return selecting


def _return_in_graph(graph_module: fx.GraphModule, location: LogitsLocation) -> None:
    graph = graph_module.graph
    output = next(node for node in graph.nodes if node.op == "output")
    returned = output.args[0]
    with graph.inserting_before(output):
        if location.key is not None and isinstance(returned, (dict, tuple, list)):  # a literal of nodes
            returned = returned[location.key]
        elif location.key is not None:  # a node that yields the container (e.g. a leaf module's call)
            returned = graph.call_function(operator.getitem, (returned, location.key))
        if location.single_logit:
            returned = graph.call_function(two_class_logits, (returned,))
    output.args = (returned,)
    graph.lint()
    graph_module.recompile()
