"""nn.Module -> computation graph (a torch_geometric `Data`), the input of a graph hypernetwork.

GHN-2 / GHN-3 style (Knyazev et al. 2021, 2023): one node per operation, parameterized (Linear,
Conv, norms, Embedding, free parameters such as `pos_embed`) or parameter-free (activations,
residual add, attention matmul / softmax, reshapes, pooling, concat, masked_fill), directed edges
producer -> consumer, and virtual edges that let messages skip up to `cutoff` hops.

    data = module_to_graph(model)                 # torch.fx; or the fallback (below) with an example
    data.x            # (N,) long, op ids: OPS[data.x[i]] == data.op_names[i]
    data.shapes       # (N, MAX_DIMS + 1) long: weight shape padded with 0, then the bias flag
    data.edge_index   # (2, E) long, src -> dst; node order is topological
    data.edge_attr    # (E,) long: forward-DAG shortest-path distance, 1 = a real edge, 2..cutoff virtual
    data.node_names, data.op_names       # list[str]
    data.param_names, data.buffer_names  # list[list[str]], fully qualified: model.get_parameter(name)

Node of a Linear `blocks.0.attn.qkv`: param_names ['blocks.0.attn.qkv.weight', 'blocks.0.attn.qkv.bias'],
shapes [3w, w, 0, 0, 1]. Every parameter of the module (named_parameters(), so tied weights count
once) sits in exactly one node; a module called twice keeps its parameters on its first call.

Tracing. torch.fx.symbolic_trace with the layers of `_MODULE_OPS` (and any other torch.nn layer,
so that an unsupported one is seen whole) as leaves. Where fx fails (data-dependent control flow),
the fallback runs ONE forward pass on `example_input` with forward hooks on the leaf layers and a
TorchFunctionMode that records every torch function called between them (x + y, x.flatten(1),
q @ k, ...), linking producer -> consumer by tensor identity. What the fallback cannot see: the
branches the example input does not take (the graph is that of this one input), operations on
non-tensors (Python arithmetic on sizes), code that bypasses __torch_function__ (C++ extensions),
and in-place writes through views (an op modifying a view is linked to the view, not its base).

Folding. Operations whose inputs depend on neither the model's inputs nor its parameters are
constants and vanish: the causal mask `torch.ones(T, T).tril()` and its `~` leave `masked_fill`
with one incoming edge (the scores). Shape-only ops (`x.size()`, `x.device`, `zeros_like`),
identities (nn.Identity, Dropout, contiguous, tuple unpacking of chunk/split) are folded into
their neighbours, and a chain of reshape-like ops (select -> transpose -> transpose) is one
`reshape` node, so the graph does not depend on how a reshape is spelled. Operations that do
not reach the output are dropped. Anything else outside the vocabulary raises
UnsupportedOpError naming the op and the module path.
"""
from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.fx import Tracer
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch_geometric.data import Data

from zoo.errors import ZooError

# ---- vocabulary ------------------------------------------------------------------------------
# Op id = position in OPS. Append only: a trained hypernet embeds these ids.
OPS: tuple[str, ...] = (
    "input", "output",
    # parameterized
    "linear", "conv1d", "conv2d", "batchnorm1d", "batchnorm2d", "layernorm", "embedding",
    "param",  # a free nn.Parameter used directly in forward (e.g. pos_embed)
    # parameter-free
    "relu", "gelu", "silu", "tanh", "sigmoid", "softmax",
    "add",  # residual sum (and subtraction)
    "mul",  # elementwise product / division, incl. scaling by a constant
    "matmul",  # matmul / bmm / @ (attention scores and mixing)
    "masked_fill", "concat",
    "reshape",  # flatten / view / reshape / permute / transpose / select / indexing / split
    "pool",  # mean / sum over dims, average pooling
    "maxpool",
)
_PARAM_OPS = frozenset(OPS[OPS.index("linear"): OPS.index("param") + 1])
MAX_DIMS = 4  # weight dims held by the shape encoding: (out, in, k1, k2)

_FOLD = "<identity>"  # classified as a no-op: consumers are linked to its input

_MODULE_OPS: dict[type, str] = {
    nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d",
    nn.BatchNorm1d: "batchnorm1d", nn.BatchNorm2d: "batchnorm2d", nn.LayerNorm: "layernorm",
    nn.Embedding: "embedding",
    nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
    nn.Softmax: "softmax",
    nn.Flatten: "reshape", nn.Unflatten: "reshape",
    nn.AdaptiveAvgPool1d: "pool", nn.AdaptiveAvgPool2d: "pool", nn.AvgPool1d: "pool", nn.AvgPool2d: "pool",
    nn.MaxPool1d: "maxpool", nn.MaxPool2d: "maxpool",
    nn.AdaptiveMaxPool1d: "maxpool", nn.AdaptiveMaxPool2d: "maxpool",
    nn.Identity: _FOLD, nn.Dropout: _FOLD, nn.Dropout1d: _FOLD, nn.Dropout2d: _FOLD,
}


def _names(op: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, op)


# Functions and tensor methods by normalized name (leading/trailing "_" stripped: __radd__ -> radd,
# relu_ -> relu); fx (operator.add, "flatten") and the fallback (Tensor.add) meet on these names.
_FUNCTION_OPS: dict[str, str] = {
    **_names("relu", "relu"), **_names("gelu", "gelu"), **_names("silu", "silu"),
    **_names("tanh", "tanh"), **_names("sigmoid", "sigmoid"), **_names("softmax", "softmax"),
    **_names("add", "add", "radd", "iadd", "sub", "rsub", "isub", "subtract"),
    **_names("mul", "mul", "rmul", "imul", "multiply", "div", "truediv", "rtruediv", "itruediv", "divide", "neg"),
    **_names("matmul", "matmul", "rmatmul", "bmm", "mm"),
    **_names("masked_fill", "masked_fill"),
    **_names("concat", "cat", "concat", "concatenate", "stack"),
    **_names("reshape", "reshape", "view", "flatten", "unflatten", "permute", "transpose", "t", "T", "mT",
             "swapaxes", "movedim", "squeeze", "unsqueeze", "select", "getitem", "narrow", "chunk", "split",
             "tensor_split", "unbind", "expand", "expand_as", "view_as", "reshape_as"),
    **_names("pool", "mean", "sum", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "avg_pool1d", "avg_pool2d"),
    **_names("maxpool", "amax", "max_pool1d", "max_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d"),
    **_names(_FOLD, "contiguous", "clone", "detach", "dropout", "float"),
}
_TUPLE_OPS = {"chunk", "split", "tensor_split", "unbind"}  # getitem on their result = tuple unpacking
# Results that depend on a tensor's shape/device/dtype only, never on its values: constants.
_SHAPE_ONLY = {"size", "dim", "numel", "shape", "device", "dtype", "ndim", "is_cuda", "layout", "requires_grad",
               "zeros_like", "ones_like", "empty_like", "full_like", "new_zeros", "new_ones", "new_full",
               "new_empty", "new_tensor"}


class GraphError(ZooError, ValueError):
    """A module that cannot be turned into a graph, or a graph that fails validate()."""


class UnsupportedOpError(GraphError):
    """An operation outside the vocabulary; the message names it and where it runs."""

    def __init__(self, op: str, where: str):
        self.op, self.where = op, where
        modules = ", ".join(sorted(c.__name__ for c in _MODULE_OPS))
        functions = ", ".join(sorted(_FUNCTION_OPS))
        at = repr(where) if where else "the root module"
        super().__init__(f"unsupported operation {op} at {at}; supported modules: {modules}; "
                         f"supported functions and tensor methods: {functions}")


# ---- raw trace -------------------------------------------------------------------------------
@dataclass
class _Op:
    kind: str  # "input" | "output" | "module" | "param" | "function"
    target: object  # nn.Module (module), nn.Parameter (param), normalized name (function), arg name (input)
    path: str  # module path (module), parameter name (param), enclosing module path (function)
    inputs: list[int] = field(default_factory=list)  # producers, indices into the op list
    op: str = ""  # vocabulary name, set by _classify


def _module_op(m: nn.Module) -> str | None:
    for cls in type(m).__mro__:
        if cls in _MODULE_OPS:
            return _MODULE_OPS[cls]
    return None


def _is_leaf(m: nn.Module) -> bool:
    """A supported layer, or any other torch.nn layer (seen whole, so an unsupported one is named)."""
    if _module_op(m) is not None:
        return True
    torch_nn = type(m).__module__.startswith(("torch.nn", "torch.ao.nn"))
    return torch_nn and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))


def _fn_name(target) -> str:
    """operator.add / Tensor.add / 'add' -> 'add'; Tensor.T.__get__ -> 'T'; __radd__ -> 'radd'."""
    if isinstance(target, str):
        name = target
    else:
        name = getattr(target, "__name__", None) or repr(target)
        if name == "__get__":  # a property such as Tensor.T or Tensor.shape
            name = getattr(getattr(target, "__self__", None), "__name__", name)
    return name.strip("_") or name


class _LeafTracer(Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _is_leaf(m)


def _trace_fx(module: nn.Module) -> list[_Op]:
    graph = _LeafTracer().trace(module)
    params = dict(module.named_parameters())
    ops: list[_Op] = []
    index: dict = {}  # fx node -> op index, for nodes that carry data
    param_ops: dict[str, int] = {}
    for node in graph.nodes:
        data_in = [index[a] for a in node.all_input_nodes if a in index]
        stack = node.meta.get("nn_module_stack") or {}
        scope = next(reversed(stack.values()))[0] if stack else ""
        if node.op == "placeholder":
            index[node] = _add(ops, _Op("input", node.target, ""))
        elif node.op == "get_attr":
            if node.target in params:  # buffers and other tensor attributes are constants
                if node.target not in param_ops:
                    param_ops[node.target] = _add(ops, _Op("param", params[node.target], node.target))
                index[node] = param_ops[node.target]
        elif node.op == "call_module":
            index[node] = _add(ops, _Op("module", module.get_submodule(node.target), node.target, data_in))
        elif node.op in ("call_function", "call_method"):
            name = _fn_name(node.target)
            if name == "getattr":  # x.device, x.T
                name = str(node.args[1])
            if data_in and name not in _SHAPE_ONLY:
                index[node] = _add(ops, _Op("function", name, scope, data_in))
        elif node.op == "output":
            _add(ops, _Op("output", None, "", data_in))
    return ops


def _add(ops: list[_Op], op: _Op) -> int:
    ops.append(op)
    return len(ops) - 1


class _Recorder(TorchFunctionMode):
    """The fallback: records leaf layers (hooks) and the torch functions called between them."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.ops: list[_Op] = []
        self.producer: dict[int, int] = {}  # id(tensor) -> op index
        self.keep: list[torch.Tensor] = []  # strong references: no id is reused while recording
        self.params = {id(p): (n, p) for n, p in module.named_parameters()}
        self.scope = [""]
        self.in_leaf = 0  # > 0 inside a leaf layer: its own internals are not recorded
        self.pending: list[int] = []

    def produced(self, out, idx: int) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.producer[id(t)] = idx
                self.keep.append(t)

    def data_inputs(self, values) -> list[int]:
        found: list[int] = []
        for t in tree_flatten(values)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            i = self.producer.get(id(t))
            if i is None and id(t) in self.params:  # a free parameter, first use
                name, p = self.params[id(t)]
                i = _add(self.ops, _Op("param", p, name))
                self.produced(p, i)
            if i is not None and i not in found:
                found.append(i)
        return found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.in_leaf == 0:
            name = _fn_name(func)
            if name not in _SHAPE_ONLY and any(isinstance(t, torch.Tensor) for t in tree_flatten(out)[0]):
                data_in = self.data_inputs((args, kwargs))
                if data_in:  # else a constant (a mask built from torch.ones)
                    self.produced(out, _add(self.ops, _Op("function", name, self.scope[-1], data_in)))
        return out

    def enter(self, path: str) -> None:  # hooks return None: a value would replace the output
        self.scope.append(path)

    def leave(self) -> None:
        self.scope.pop()

    def leaf_pre(self, path: str, m: nn.Module, args, kwargs) -> None:
        if self.in_leaf == 0:
            self.pending.append(_add(self.ops, _Op("module", m, path, self.data_inputs((args, kwargs)))))
        self.in_leaf += 1

    def leaf_post(self, m: nn.Module, args, kwargs, out) -> None:
        self.in_leaf -= 1
        if self.in_leaf == 0:
            self.produced(out, self.pending.pop())


def _as_inputs(example_input) -> tuple[torch.Tensor, ...]:
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, (tuple, list, torch.Size)) and all(isinstance(d, int) for d in example_input):
        g = torch.Generator().manual_seed(0)  # a shape without the batch dim: a batch of 2 samples
        return (torch.randn(2, *example_input, generator=g),)
    if isinstance(example_input, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in example_input):
        return tuple(example_input)
    raise GraphError(f"example_input must be a tensor, a tuple of tensors, or an input shape (ints) "
                     f"without the batch dimension; got {type(example_input).__name__}")


def _trace_hooks(module: nn.Module, example_input) -> list[_Op]:
    inputs = _as_inputs(example_input)
    rec = _Recorder(module)
    arg_names = list(inspect.signature(module.forward).parameters)
    for k, t in enumerate(inputs):
        rec.produced(t, _add(rec.ops, _Op("input", arg_names[k] if k < len(arg_names) else f"input{k}", "")))
    handles = []
    for path, m in module.named_modules():
        if _is_leaf(m):
            handles.append(m.register_forward_pre_hook(
                lambda mod, a, kw, path=path: rec.leaf_pre(path, mod, a, kw), with_kwargs=True))
            handles.append(m.register_forward_hook(rec.leaf_post, with_kwargs=True))
        else:  # containers and custom modules: the scope that names the functions they call
            handles.append(m.register_forward_pre_hook(lambda mod, a, path=path: rec.enter(path)))
            handles.append(m.register_forward_hook(lambda mod, a, o: rec.leave()))
    buffers = {n: b.detach().clone() for n, b in module.named_buffers()}  # BN statistics stay untouched
    try:
        with torch.no_grad(), rec:
            out = module(*inputs)
    except Exception as e:
        raise GraphError(f"the forward pass on example_input failed ({type(e).__name__}: {e}); "
                         f"pass an example_input that {type(module).__name__} accepts") from e
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for n, b in module.named_buffers():
                b.copy_(buffers[n])
    _add(rec.ops, _Op("output", None, "", rec.data_inputs(out)))
    return rec.ops


# ---- from the raw trace to the graph ---------------------------------------------------------
def _classify(ops: list[_Op], live: list[bool]) -> None:
    for i, o in enumerate(ops):
        if not live[i]:
            continue
        if o.kind in ("input", "output", "param"):
            o.op = o.kind
        elif o.kind == "module":
            o.op = _module_op(o.target) or ""
            if not o.op:
                raise UnsupportedOpError(type(o.target).__name__, o.path)
        else:
            name = o.target
            if name == "getitem" and len(o.inputs) == 1 and ops[o.inputs[0]].target in _TUPLE_OPS:
                o.op = _FOLD  # q, k, v = x.chunk(3): unpacking, the chunk node is the reshape
            elif name in _FUNCTION_OPS:
                o.op = _FUNCTION_OPS[name]
            else:
                raise UnsupportedOpError(name, o.path)


def _simplify(ops: list[_Op]) -> list[int]:
    """Drop dead ops, fold identities, merge reshape chains; returns the kept op indices in order."""
    live = [False] * len(ops)
    todo = [i for i, o in enumerate(ops) if o.kind == "output"]
    while todo:
        i = todo.pop()
        if not live[i]:
            live[i] = True
            todo.extend(ops[i].inputs)
    _classify(ops, live)
    alias: dict[int, list[int]] = {}  # folded op -> the ops standing for it
    for i, o in enumerate(ops):
        if not live[i]:
            continue
        o.inputs = list(dict.fromkeys(j for k in o.inputs for j in alias.get(k, [k])))
        if o.op == _FOLD:
            alias[i] = o.inputs
            live[i] = False
    consumers = [0] * len(ops)
    for i, o in enumerate(ops):
        if live[i]:
            for j in o.inputs:
                consumers[j] += 1
    for i, o in enumerate(ops):  # in order: a chain of three ends as one node, in the last place, with the first name
        if live[i] and o.op == "reshape" and len(o.inputs) == 1:
            j = o.inputs[0]
            if live[j] and ops[j].op == "reshape" and consumers[j] == 1:  # i absorbs j: j's inputs and name
                live[j] = False
                o.inputs, o.kind, o.target, o.path = ops[j].inputs, ops[j].kind, ops[j].target, ops[j].path
    return [i for i in range(len(ops)) if live[i]]


def _shape_row(weight: torch.Tensor | None, bias: bool, what: str) -> list[int]:
    row = [0] * (MAX_DIMS + 1)
    if weight is not None:
        if weight.dim() > MAX_DIMS:
            raise GraphError(f"{what} has {weight.dim()} dims {tuple(weight.shape)}; "
                             f"the shape encoding holds at most {MAX_DIMS}")
        row[: weight.dim()] = list(weight.shape)
    row[MAX_DIMS] = int(bias)
    return row


def _virtual_edges(n: int, real: list[tuple[int, int]], cutoff: int) -> list[tuple[int, int, int]]:
    """(src, dst, d) for every dst reachable from src along forward edges in d = 2..cutoff hops (BFS)."""
    succ: list[list[int]] = [[] for _ in range(n)]
    for s, d in real:
        succ[s].append(d)
    out = []
    for s in range(n):
        dist = {s: 0}
        queue = deque([s])
        while queue:
            u = queue.popleft()
            if dist[u] == cutoff:
                continue
            for v in succ[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    queue.append(v)
        out.extend((s, v, dv) for v, dv in dist.items() if dv >= 2)
    return out


def _to_data(module: nn.Module, ops: list[_Op], keep: list[int], cutoff: int) -> Data:
    pos = {i: k for k, i in enumerate(keep)}
    canon = {id(p): n for n, p in module.named_parameters()}
    canon_buf = {id(b): n for n, b in module.named_buffers()}
    owned: set[int] = set()
    names, op_names, params, buffers, shapes = [], [], [], [], []
    seen: dict[str, int] = {}
    n_inputs = sum(ops[i].kind == "input" for i in keep)
    for i in keep:
        o = ops[i]
        row, p_names, b_names = [0] * (MAX_DIMS + 1), [], []
        if o.kind == "input":
            name = "input" if n_inputs == 1 else f"input.{o.target}"
        elif o.kind == "output":
            name = "output"
        elif o.kind == "param":
            name = o.path
            row = _shape_row(o.target, False, f"parameter {o.path!r}")
            if id(o.target) not in owned:
                owned.add(id(o.target))
                p_names = [canon[id(o.target)]]
        elif o.kind == "module":
            m = o.target
            name = o.path or o.op
            w, b = getattr(m, "weight", None), getattr(m, "bias", None)
            row = _shape_row(w if isinstance(w, torch.Tensor) else None, isinstance(b, torch.Tensor),
                             f"{type(m).__name__} at {o.path!r}")
            for p in m.parameters():
                if id(p) not in owned:
                    owned.add(id(p))
                    p_names.append(canon[id(p)])
            b_names = [canon_buf[id(b)] for b in m.buffers() if id(b) in canon_buf and id(b) not in owned]
            owned.update(id(b) for b in m.buffers())
        else:
            name = f"{o.path}.{o.op}" if o.path else o.op
        if name in seen:  # a module called twice, the second add of a scope, ...
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        names.append(name)
        op_names.append(o.op)
        params.append(p_names)
        buffers.append(b_names)
        shapes.append(row)
    real = sorted({(pos[j], pos[i]) for i in keep for j in ops[i].inputs})
    edges = [(s, d, 1) for s, d in real] + _virtual_edges(len(keep), real, cutoff)
    edges.sort(key=lambda e: (e[2], e[0], e[1]))
    edge_index = torch.tensor([[s for s, _, _ in edges], [d for _, d, _ in edges]], dtype=torch.long)
    return Data(
        x=torch.tensor([OPS.index(op) for op in op_names], dtype=torch.long),  # (N,)
        shapes=torch.tensor(shapes, dtype=torch.long).reshape(len(keep), MAX_DIMS + 1),  # (N, MAX_DIMS + 1)
        edge_index=edge_index.reshape(2, len(edges)),  # (2, E)
        edge_attr=torch.tensor([d for _, _, d in edges], dtype=torch.long),  # (E,)
        node_names=names, op_names=op_names, param_names=params, buffer_names=buffers,
        num_nodes=len(keep),
    )


def module_to_graph(module: nn.Module, example_input=None, cutoff: int = 5, *, tracer: str = "auto") -> Data:
    """The computation graph of `module` (see the module docstring for the fields), validated.

    tracer: "fx" (torch.fx only), "hooks" (the fallback, needs example_input), or "auto" (fx, and
    the fallback when fx cannot trace and example_input is given). example_input: a tensor, a
    tuple of tensors, or an input shape without the batch dim (a random float batch of 2).
    """
    if cutoff < 1:
        raise GraphError(f"cutoff must be >= 1 (1 = no virtual edges); got {cutoff}")
    if tracer not in ("auto", "fx", "hooks"):
        raise GraphError(f"unknown tracer {tracer!r}; valid: auto, fx, hooks")
    if tracer == "hooks" and example_input is None:
        raise GraphError("tracer='hooks' runs one forward pass: pass example_input (a tensor or an input shape)")
    if tracer == "hooks":
        ops = _trace_hooks(module, example_input)
    elif _is_leaf(module):  # a bare layer: fx would trace inside it
        ops = [_Op("input", "input", ""), _Op("module", module, "", [0]), _Op("output", None, "", [1])]
    else:
        try:
            ops = _trace_fx(module)
        except Exception as e:
            if tracer == "fx" or example_input is None:
                raise GraphError(f"torch.fx cannot trace {type(module).__name__} ({type(e).__name__}: {e}); "
                                 f"pass example_input to use the forward-pass fallback") from e
            ops = _trace_hooks(module, example_input)
    data = _to_data(module, ops, _simplify(ops), cutoff)
    validate(data, module)
    return data


# ---- validation ------------------------------------------------------------------------------
def validate(data: Data, module: nn.Module | None = None) -> None:
    """Raise GraphError with a readable message if `data` is not a well-formed graph (of `module`).

    Checks: fields and their lengths, op ids vs op names, edges between existing nodes, real
    edges going forward (the node order is topological), distances >= 1, every parameter mapped to
    one node only, parameter-free ops without parameters; with `module`: every parameter of the
    module mapped, names that exist, shapes and bias flags that agree with the tensors, buffers.
    """
    for key in ("x", "shapes", "edge_index", "edge_attr", "node_names", "op_names", "param_names", "buffer_names"):
        if getattr(data, key, None) is None:
            raise GraphError(f"graph has no field {key!r}")
    n = int(data.x.numel())
    for key in ("shapes", "node_names", "op_names", "param_names", "buffer_names"):
        if len(data[key]) != n:
            raise GraphError(f"graph field {key!r} has {len(data[key])} entries for {n} nodes")
    if tuple(data.shapes.shape) != (n, MAX_DIMS + 1):
        raise GraphError(f"shapes is {tuple(data.shapes.shape)}, expected ({n}, {MAX_DIMS + 1})")
    names = data.node_names
    for k, (op_id, op) in enumerate(zip(data.x.tolist(), data.op_names)):
        if not 0 <= op_id < len(OPS) or OPS[op_id] != op:
            raise GraphError(f"node {k} {names[k]!r}: op id {op_id} does not match op {op!r} (OPS[{op_id}])")
    ei, ea = data.edge_index, data.edge_attr
    if ei.dim() != 2 or ei.shape[0] != 2 or ea.shape[0] != ei.shape[1]:
        raise GraphError(f"edge_index must be (2, E) with edge_attr (E,); got {tuple(ei.shape)} and {tuple(ea.shape)}")
    for e, (s, d, dist) in enumerate(zip(ei[0].tolist(), ei[1].tolist(), ea.tolist())):
        if not (0 <= s < n and 0 <= d < n):
            raise GraphError(f"edge {e} ({s} -> {d}) points to a missing node; the graph has {n} nodes")
        if dist < 1:
            raise GraphError(f"edge {e} ({names[s]!r} -> {names[d]!r}) has distance {dist}; distances are >= 1")
        if dist == 1 and s >= d:
            raise GraphError(f"edge {e} ({names[s]!r} -> {names[d]!r}) goes backward; "
                             f"nodes must be in topological order")
    where: dict[str, str] = {}
    for k, p_names in enumerate(data.param_names):
        if data.op_names[k] not in _PARAM_OPS and (p_names or data.buffer_names[k] or data.shapes[k].any()):
            raise GraphError(f"node {names[k]!r} is a parameter-free {data.op_names[k]} but carries "
                             f"parameters {p_names} / shape {data.shapes[k].tolist()}")
        for p in p_names:
            if p in where:
                raise GraphError(f"parameter {p!r} is mapped twice: to node {where[p]!r} and to node {names[k]!r}")
            where[p] = names[k]
    if module is None:
        return
    params = dict(module.named_parameters())
    missing = [p for p in params if p not in where]
    if missing:
        raise GraphError(f"parameter(s) {missing} of {type(module).__name__} are not mapped to any node "
                         f"(not used in forward, or dropped from the graph)")
    for k, p_names in enumerate(data.param_names):
        row = data.shapes[k].tolist()
        weight = tuple(d for d in row[:MAX_DIMS] if d)
        for p in p_names:
            if p not in params:
                raise GraphError(f"node {names[k]!r} maps {p!r}, which {type(module).__name__} has no parameter of")
            want = tuple(params[p].shape)
            is_bias = data.op_names[k] != "param" and p.rsplit(".", 1)[-1] == "bias"
            expect = (weight[0],) if is_bias and weight else weight
            if is_bias and not row[MAX_DIMS]:
                raise GraphError(f"node {names[k]!r} maps bias {p!r} but its bias flag is 0")
            if want != expect:
                raise GraphError(f"node {names[k]!r}: parameter {p!r} has shape {want}, the graph encodes {expect}")
        if row[MAX_DIMS] and not any(p.rsplit(".", 1)[-1] == "bias" for p in p_names) and p_names:
            raise GraphError(f"node {names[k]!r} has the bias flag set but maps no bias: {p_names}")
    buffers = dict(module.named_buffers())
    for k, b_names in enumerate(data.buffer_names):
        for b in b_names:
            if b not in buffers:
                raise GraphError(f"node {names[k]!r} maps buffer {b!r}, which {type(module).__name__} has no buffer of")
