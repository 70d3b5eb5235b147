"""Any convolutional network torch.fx can capture (family ``generic``): the fallback for networks no
hand-written family claims (timm ResNet / MobileNetV2 and the DDPM UNet keep theirs).

From the captured graph, a *unit* is a convolution with the foldable norm that reads it (BatchNorm
with running statistics), optionally a residual addition, and optionally an elementwise activation.
Units form *chains* where one unit's output feeds the next convolution and nothing else outside the
chain reads it; an addition is a residual span when its other operand is an earlier position of the
same chain (identity) or a 1x1 convolution + BatchNorm of one (projection). Everything else is a
barrier: pooling, squeeze-excite products, concatenations, norms that cannot fold, reshapes,
attention, convolutions that cannot merge exactly (each named with its reason by :func:`explain`).
Chains are numbered one after the other into the spec; a barrier sits where one chain ends and the
next begins.

A plan is applied by replacing each chain's nodes with one :class:`~lmzoo.adapters.base.chain.Chain`
module in a ``torch.fx.GraphModule``: the configured network is a module that trains, and merging
replaces the chains by their merged form. Transparent layers inside a chain (identity, dropout,
stochastic depth) are dropped; the graph is captured in eval mode, so Python branches on
``self.training`` outside the chains keep their eval-mode path.

A :class:`GraphPolicy` adds a family's paper settings: which modules' convolutions are units, barriers
after strided convolutions, and the activation inserted where a merged block ends on a linear
position. ``TIMM_RESNET`` and ``TIMM_MOBILENETV2`` reproduce the hand-written families' candidate sets
exactly (tests/adapters/test_graph.py).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from lmzoo.adapters.base.activations import ADDITIONS, function_kind, module_kind
from lmzoo.adapters.base.chain import LayoutUnit, build_chain
from lmzoo.adapters.base.modules import check_mergeable_conv, unit_from_conv
from lmzoo.adapters.base.registry import Adapter, register_adapter
from lmzoo.adapters.base.tracing import eval_mode, run_with_hooks
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Position, ResidualSpan, Spec
from lmzoo.errors import InvalidPlanError, UnsupportedModelError

GENERIC = "generic"


@dataclass(frozen=True)
class GraphPolicy:
    """A family's settings over the generic analysis (defaults: the generic family's)."""

    #: the family name recorded in the spec
    family: str = GENERIC
    #: only convolutions under these module paths are units (None: all)
    within: tuple[str, ...] | None = None
    #: a barrier this many positions after each strided unit (None: none)
    barrier_after_stride: int | None = None
    #: where a block of >= 2 units ends on a position without activation, apply the activation of
    #: the position before it (MobileNetV2's linear bottlenecks, as the paper does)
    insert_activation: bool = False


#: the paper's ResNet setting: the residual stages, a strided conv always its own block
TIMM_RESNET = GraphPolicy("timm-resnet", ("layer1", "layer2", "layer3", "layer4"), barrier_after_stride=0)
#: the paper's MobileNetV2 setting: the blocks, a stage break one position after each strided conv
#: (so the 1x1 projection may merge into the stride-2 depthwise conv), ReLU6 at merged block ends
TIMM_MOBILENETV2 = GraphPolicy(
    "timm-mobilenetv2", ("blocks",), barrier_after_stride=1, insert_activation=True
)


# -- capturing the graph ----------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with BatchNorm subclasses (timm's BatchNormAct2d) and the modules and
    functions timm marks as not traceable kept whole."""

    def __init__(self) -> None:
        notrace_modules, notrace_functions = _timm_notrace()
        super().__init__(autowrap_functions=tuple(notrace_functions))
        self.notrace = tuple(notrace_modules)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, self.notrace)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _timm_notrace() -> tuple[list[type], list[Any]]:
    try:
        from timm.layers import get_notrace_functions, get_notrace_modules
    except ImportError:  # timm is a dependency, but the adapter does not need it
        return [], []
    return list(get_notrace_modules()), list(get_notrace_functions())


def capture(model: nn.Module) -> fx.GraphModule:
    """``model`` as a GraphModule sharing its modules (captured in eval mode)."""
    with eval_mode(model):
        try:
            graph = _Tracer().trace(model)
        except Exception as err:  # tracing fails on data-dependent control flow, in many ways
            raise UnsupportedModelError(
                f"{type(model).__name__} cannot be captured as a graph by torch.fx "
                f"({type(err).__name__}: {str(err).splitlines()[0][:160]}); lmzoo merges networks whose "
                "forward has no data-dependent Python control flow"
            ) from None
    return fx.GraphModule(model, graph)


# -- reading the graph ------------------------------------------------------------------------------

_TRANSPARENT_MODULES: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
_TRANSPARENT_FUNCTIONS = {F.dropout, F.dropout2d, torch.dropout}


def _is_transparent(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Layers that are the identity at inference: identity, dropout, stochastic depth."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        module = modules[cast(str, node.target)]
        return isinstance(module, _TRANSPARENT_MODULES) or type(module).__name__ in (
            "StochasticDepth",
            "DropPath",
        )
    if node.op == "call_function":
        return (
            node.target in _TRANSPARENT_FUNCTIONS
            or getattr(node.target, "__name__", "") == "stochastic_depth"
        )
    return False


@dataclass
class _Reader:
    """The graph and what is known of its nodes."""

    gm: fx.GraphModule
    modules: dict[str, nn.Module] = field(init=False)

    def __post_init__(self) -> None:
        self.modules = dict(self.gm.named_modules())

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.modules[cast(str, node.target)] if node.op == "call_module" else None

    def sole_user(self, node: fx.Node) -> fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    def forward(self, node: fx.Node) -> tuple[fx.Node, list[fx.Node]]:
        """Past the transparent layers that alone read ``node``: the last node, and those passed."""
        passed = []
        while (user := self.sole_user(node)) is not None and _is_transparent(user, self.modules):
            if user.args[0] is not node:
                break
            passed.append(user)
            node = user
        return node, passed

    def back(self, node: Any) -> Any:
        """The producer behind transparent layers."""
        return self.behind(node)[0]

    def behind(self, node: Any) -> tuple[Any, list[fx.Node]]:
        """The producer behind transparent layers, and those layers."""
        passed = []
        while isinstance(node, fx.Node) and _is_transparent(node, self.modules) and len(node.users) == 1:
            passed.append(node)
            node = node.args[0]
        return node, passed

    def norm(self, node: fx.Node | None) -> nn.BatchNorm2d | None:
        module = self.module(node) if node is not None else None
        if (
            isinstance(module, nn.BatchNorm2d)
            and module.track_running_stats
            and module.running_mean is not None
        ):
            return module
        return None

    def activation(self, node: fx.Node | None) -> str | None:
        if node is None or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        module = self.module(node)
        if module is not None:
            return module_kind(module)
        return function_kind(node)

    def conv(self, node: fx.Node) -> nn.Conv2d | None:
        module = self.module(node)
        return module if isinstance(module, nn.Conv2d) else None


@dataclass
class _Unit:
    conv: fx.Node
    input: fx.Node
    norm: fx.Node | None = None
    add: fx.Node | None = None
    shortcut: fx.Node | None = None  # the other operand of ``add``
    act: fx.Node | None = None
    kind: str | None = None
    value: fx.Node | None = None
    body: list[fx.Node] = field(default_factory=list)
    span: ResidualSpan | None = None


def _parse_unit(reader: _Reader, conv: fx.Node, rejected_adds: set[fx.Node]) -> _Unit:
    """conv -> [norm] -> [residual add] -> [activation], as far as the graph allows."""
    source, passed = reader.behind(conv.args[0])
    unit = _Unit(conv, source, body=[*reversed(passed), conv])
    last, passed = reader.forward(conv)
    unit.body += passed
    user = reader.sole_user(last)
    if user is not None and reader.norm(user) is not None and user.args[0] is last:
        unit.norm = user
        unit.body.append(user)
        inner = getattr(reader.module(user), "act", None)
        if inner is not None and not isinstance(inner, nn.Identity):
            unit.kind = module_kind(inner)  # timm's BatchNormAct2d: the activation is inside the norm
            unit.value = user if unit.kind is not None else None
            if unit.kind is None:
                unit.body.pop()
                unit.norm = None
            return _finish(unit, last if unit.norm is None else user)
        last, passed = reader.forward(user)
        unit.body += passed
        user = reader.sole_user(last)
    if (
        user is not None
        and user.op == "call_function"
        and user.target in ADDITIONS
        and user not in rejected_adds
        and len(user.args) == 2
        and all(isinstance(a, fx.Node) for a in user.args)
        and last in user.args
    ):
        unit.add = user
        unit.shortcut = cast(fx.Node, user.args[1] if user.args[0] is last else user.args[0])
        unit.body.append(user)
        last, passed = reader.forward(user)
        unit.body += passed
        user = reader.sole_user(last)
    kind = reader.activation(user)
    if kind is not None and user is not None and user.args[0] is last:
        unit.act, unit.kind = user, kind
        unit.body.append(user)
        last = user
    return _finish(unit, last)


def _finish(unit: _Unit, value: fx.Node) -> _Unit:
    unit.value = value
    return unit


@dataclass
class GraphLayout:
    """What the generic analysis finds: the units in spec order (with the chains they form), the
    spans and barriers, and why each convolution that is not a unit was left out."""

    gm: fx.GraphModule
    units: list[_Unit]
    #: (first position, last position, input node, output node) of each chain, in order
    chains: list[tuple[int, int, fx.Node, fx.Node]]
    spans: list[ResidualSpan]
    #: barrier position -> why
    barriers: dict[int, str]
    #: convolution module path -> why it is not a unit
    refused: dict[str, str]
    inserted: dict[int, str]

    @property
    def layout_units(self) -> list[LayoutUnit]:
        return [
            LayoutUnit(
                cast(str, u.conv.target), cast(str, u.norm.target) if u.norm is not None else None, u.kind
            )
            for u in self.units
        ]


def analyse(gm: fx.GraphModule, policy: GraphPolicy = GraphPolicy()) -> GraphLayout:
    """The chains of ``gm``'s graph under ``policy``."""
    reader = _Reader(gm)
    rejected_adds: set[fx.Node] = set()
    breaks: set[fx.Node] = set()
    not_projections: set[fx.Node] = set()
    for _ in range(1 + 2 * sum(1 for n in gm.graph.nodes if n.op in ("call_function", "call_module"))):
        ahead = _projections_ahead(reader, not_projections)
        layout, unused = _chains(reader, policy, rejected_adds, breaks, ahead)
        if unused:  # claimed as shortcuts but no chain used them: they are convolutions like others
            not_projections.update(unused)
            continue
        problems = _outside_readers(layout)
        if not problems:
            return layout
        for value, spans_over in problems:
            breaks.add(value)
            rejected_adds.update(spans_over)
    raise UnsupportedModelError("the graph analysis did not settle (a bug in lmzoo: please report it)")


def _conv_refusal(reader: _Reader, node: fx.Node, policy: GraphPolicy) -> str | None:
    path = cast(str, node.target)
    if policy.within is not None and not any(path == p or path.startswith(f"{p}.") for p in policy.within):
        return f"outside the {policy.family} family's chain ({', '.join(policy.within)})"
    try:
        check_mergeable_conv(reader.modules[path], path)
    except UnsupportedModelError as err:
        return str(err).split(": ", 1)[-1]
    if not isinstance(node.args[0], fx.Node) or len(node.args) != 1 or node.kwargs:
        return "called with more than its input"
    return None


def _projection(reader: _Reader, node: fx.Node) -> tuple[fx.Node, fx.Node, fx.Node] | None:
    """(source, conv, norm) when ``node`` is norm(conv1x1(source)) read by nothing else."""
    norm = reader.back(node)
    inner = getattr(reader.module(norm), "act", None)
    if reader.norm(norm) is None or not (inner is None or isinstance(inner, nn.Identity)):
        return None
    conv = reader.back(norm.args[0])
    module = reader.conv(conv)
    if module is None or module.kernel_size != (1, 1) or module.padding != (0, 0) or module.groups != 1:
        return None
    if len(conv.users) != 1 or len(norm.users) != 1 or module.dilation != (1, 1):
        return None
    return reader.back(conv.args[0]), conv, norm


def _projections_ahead(reader: _Reader, not_projections: set[fx.Node]) -> set[fx.Node]:
    """The 1x1 convs (and norms) that are shortcuts: an addition's operand norm(conv1x1(x)) whose other
    operand was computed from x, whatever order the forward computes them in."""
    found: set[fx.Node] = set()
    for node in reader.gm.graph.nodes:
        if node.op != "call_function" or node.target not in ADDITIONS or len(node.args) != 2:
            continue
        if not all(isinstance(a, fx.Node) for a in node.args):
            continue
        for branch, shortcut in (node.args, node.args[::-1]):
            projection = _projection(reader, shortcut)
            if projection is None or projection[1] in not_projections:
                continue
            if _reaches(branch, projection[0], avoid=shortcut):
                found.update(projection[1:])
                break
    return found


def _reaches(start: fx.Node, target: fx.Node, *, avoid: fx.Node, limit: int = 256) -> bool:
    """Whether ``target`` is an ancestor of ``start`` (not through ``avoid``), within ``limit`` nodes."""
    seen, todo = {avoid}, [start]
    while todo and len(seen) < limit:
        node = todo.pop()
        if node is target:
            return True
        if node in seen:
            continue
        seen.add(node)
        todo.extend(a for a in node.all_input_nodes if a not in seen)
    return False


def _chains(
    reader: _Reader,
    policy: GraphPolicy,
    rejected_adds: set[fx.Node],
    breaks: set[fx.Node],
    ahead: set[fx.Node],
) -> tuple[GraphLayout, set[fx.Node]]:
    units: list[_Unit] = []
    chains: list[tuple[int, int, fx.Node, fx.Node]] = []
    spans: list[ResidualSpan] = []
    barriers: dict[int, str] = {}
    refused: dict[str, str] = {}
    claimed: set[fx.Node] = set()
    positions: dict[fx.Node, int] = {}  # value nodes of the open chain -> their position
    chain_start: int | None = None
    chain_input: fx.Node | None = None

    def close(reason: str) -> None:
        nonlocal chain_start
        if chain_start is not None and len(units) > chain_start:
            assert chain_input is not None and units[-1].value is not None
            chains.append((chain_start, len(units), chain_input, units[-1].value))
            barriers.setdefault(len(units), reason)
        chain_start = None
        positions.clear()

    for node in list(reader.gm.graph.nodes):
        if node in claimed or node in ahead or reader.conv(node) is None:
            continue
        reason = _conv_refusal(reader, node, policy)
        if reason is not None:
            refused[cast(str, node.target)] = reason
            close(f"{node.target} is not a unit: {reason}")
            continue
        unit = _parse_unit(reader, node, rejected_adds)
        previous = units[-1] if units and chain_start is not None else None
        if previous is None or unit.input is not previous.value or previous.value in breaks:
            if previous is not None and unit.input is previous.value:
                close(f"the output of {previous.conv.target} is also read outside the chain")
            elif previous is not None:
                close(f"{node.target} does not read the output of {previous.conv.target}")
            else:
                close(f"{node.target} starts a chain")
            chain_start, chain_input = len(units), unit.input
            positions[unit.input] = len(units)
        if unit.add is not None and unit.shortcut is not None:
            shortcut = reader.back(unit.shortcut)
            projection = _projection(reader, unit.shortcut) if shortcut not in positions else None
            if shortcut in positions:
                unit.span = ResidualSpan(positions[shortcut], len(units) + 1)
            elif projection is not None and projection[0] in positions:
                source, conv, norm = projection
                conv_module = reader.conv(conv)
                assert conv_module is not None
                unit.span = ResidualSpan(
                    positions[source],
                    len(units) + 1,
                    projection=cast(str, conv.target),
                    stride=conv_module.stride[0],
                    projection_norm=cast(str, norm.target),
                )
                claimed.update((conv, norm))
                unit.body += [conv, norm, *_between(reader, conv, norm, unit.add)]
            else:  # not a residual lmzoo can fuse: the unit ends before the addition
                rejected_adds.add(unit.add)
                unit = _parse_unit(reader, node, rejected_adds)
        units.append(unit)
        if unit.span is not None:
            spans.append(unit.span)
        assert unit.value is not None
        positions[unit.value] = len(units)
    close("the end of the network")
    barriers.pop(len(units), None)  # the last position needs no barrier
    _apply_policy(reader, policy, units, barriers)
    inserted = _inserted(policy, units)
    unused = {n for n in ahead if reader.conv(n) is not None} - claimed
    return GraphLayout(reader.gm, units, chains, spans, barriers, refused, inserted), unused


def _between(reader: _Reader, conv: fx.Node, norm: fx.Node, add: fx.Node) -> list[fx.Node]:
    """The transparent nodes on the projection's path (conv -> norm -> add)."""
    passed = []
    for start, stop in ((conv, norm), (norm, add)):
        node = start
        while node is not stop:
            user = reader.sole_user(node)
            if user is None or user is stop:
                break
            passed.append(user)
            node = user
    return passed


def _outside_readers(layout: GraphLayout) -> list[tuple[fx.Node, set[fx.Node]]]:
    """Positions inside a chain whose maps are read outside it: (value node, additions of spans over
    that position), each to break the chain there."""
    problems = []
    for first, last, _, output in layout.chains:
        members = {n for u in layout.units[first:last] for n in u.body}
        for index in range(first, last):
            unit = layout.units[index]
            for node in unit.body:
                if node is output:
                    continue
                if any(user not in members for user in node.users):
                    position = index + 1
                    over = {
                        layout.units[s.target - 1].add
                        for s in layout.spans
                        if s.source < position < s.target and layout.units[s.target - 1].add is not None
                    }
                    problems.append((unit.value, {a for a in over if a is not None}))
                    break
    return [(cast(fx.Node, v), a) for v, a in problems]


def _apply_policy(
    reader: _Reader, policy: GraphPolicy, units: Sequence[_Unit], barriers: dict[int, str]
) -> None:
    if policy.barrier_after_stride is None:
        return
    for index, unit in enumerate(units, start=1):
        conv = reader.conv(unit.conv)
        position = index + policy.barrier_after_stride
        if conv is not None and conv.stride[0] > 1 and position <= len(units):
            barriers.setdefault(
                position, f"{policy.family}: a stage break after the strided {unit.conv.target}"
            )


def _inserted(policy: GraphPolicy, units: Sequence[_Unit]) -> dict[int, str]:
    if not policy.insert_activation:
        return {}
    inserted = {}
    for index in range(2, len(units) + 1):
        previous = units[index - 2].kind
        if units[index - 1].kind is None and previous is not None:
            inserted[index] = previous
    return inserted


# -- the adapter ------------------------------------------------------------------------------------


@register_adapter
class GraphAdapter(Adapter):
    family = GENERIC
    description = (
        "any other network torch.fx can capture: chains of conv -> BatchNorm -> elementwise activation "
        "-> conv and residual additions (identity or 1x1 conv + BatchNorm shortcuts); everything else "
        "a barrier (`lmzoo inspect` names each and why)"
    )
    fallback = True

    def __init__(self, policy: GraphPolicy | None = None) -> None:
        self.policy = policy or GraphPolicy()

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, nn.Module)

    def layout(self, model: nn.Module) -> GraphLayout:
        return analyse(capture(model), self.policy)

    def trace(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Spec:
        layout = self.layout(model)
        if not layout.units:
            reasons = "; ".join(f"{path}: {why}" for path, why in list(layout.refused.items())[:3])
            raise UnsupportedModelError(
                f"{type(model).__name__} has no convolution lmzoo can merge"
                + (f" ({reasons})" if reasons else " (it has no nn.Conv2d)")
            )
        convs = {
            cast(str, u.conv.target): model.get_submodule(cast(str, u.conv.target)) for u in layout.units
        }
        shapes, _ = run_with_hooks(model, convs, example_inputs)
        units = tuple(
            unit_from_conv(i, path, cast(nn.Conv2d, convs[path]), shapes[path])
            for i, path in enumerate((cast(str, u.conv.target) for u in layout.units), start=1)
        )
        positions = [Position(0, None, False, layout.inserted.get(0))]
        for i, u in enumerate(layout.units, start=1):
            positions.append(Position(i, u.kind, i in layout.barriers, layout.inserted.get(i)))
        return Spec(
            family=self.policy.family,
            units=units,
            positions=tuple(positions),
            spans=tuple(layout.spans),
            input_shapes=tuple(tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)),
        )

    def apply_plan(self, model: nn.Module, spec: Spec, plan: Plan, *, in_place: bool = False) -> nn.Module:
        source = model if in_place else copy.deepcopy(model)
        layout = self.layout(source)
        if [cast(str, u.conv.target) for u in layout.units] != [u.path for u in spec.units]:
            raise InvalidPlanError(
                "the spec was traced from a different network than the one given: trace this model "
                "with lmzoo.trace and solve again"
            )
        gm = layout.gm
        graph = gm.graph
        units = layout.layout_units
        replaced: dict[fx.Node, fx.Node] = {}  # a chain's output -> the call of its Chain module
        for k, (first, last, input_node, output_node) in enumerate(layout.chains):
            chain = build_chain(gm, units, spec, plan, first, last)
            name = f"lmzoo_chain{k}"
            gm.add_submodule(name, chain)
            with graph.inserting_after(output_node):
                call = graph.call_module(name, (replaced.get(input_node, input_node),))
            output_node.replace_all_uses_with(call)
            replaced[output_node] = call
            for node in reversed([n for u in layout.units[first:last] for n in u.body]):
                if not node.users:
                    graph.erase_node(node)
        graph.eliminate_dead_code()
        graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
        return gm

    def explain(self, model: nn.Module) -> list[tuple[str, str]]:
        """(module path or position, what it is) for every convolution and barrier."""
        layout = self.layout(model)
        rows = [(path, f"not a unit: {why}") for path, why in layout.refused.items()]
        for k, (first, last, _, _) in enumerate(layout.chains):
            paths = [cast(str, u.conv.target) for u in layout.units[first:last]]
            rows.append((f"chain {k}", f"units {first + 1}-{last}: {', '.join(paths)}"))
        rows += [(f"position {p}", f"barrier: {why}") for p, why in sorted(layout.barriers.items())]
        return rows
