"""hypernet.graph: module -> computation graph for the zoo's six families, the parameter map and
shape encoding, virtual edges against an independent shortest-path computation, the fx-less
fallback, unsupported ops and validate()."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import zoo.nets as N
from hypernet import MAX_DIMS, OPS, GraphError, UnsupportedOpError, module_to_graph, validate

# Input shapes of the tasks (mnist1d: (1, 40), digits: (1, 8, 8), convection: (t, x)), given
# directly so that the tests do not generate the data sets.
MNIST1D = {"input_shape": (1, 40), "n_classes": 10}
DIGITS = {"input_shape": (1, 8, 8), "n_classes": 10}
GPT_TOKENS = torch.randint(0, 20, (2, 16), generator=torch.Generator().manual_seed(0))

FAMILIES = {  # name -> (net, example input for the fallback)
    "mlp": (lambda: N.build("mlp", **MNIST1D, width=16, depth=2), (1, 40)),
    "cnn": (lambda: N.build("cnn", **MNIST1D, width=8, depth=2), (1, 40)),
    "resnet": (lambda: N.build("resnet", **DIGITS, width=4), (1, 8, 8)),
    "vit": (lambda: N.build("vit", **DIGITS, width=16), (1, 8, 8)),
    "gpt": (lambda: N.build("gpt", input_shape=(16,), n_classes=20, width=16, depth=1), GPT_TOKENS),
    "pinn": (lambda: N.build("pinn", input_shape=(2,), n_classes=1), (2,)),
}


@pytest.fixture(scope="module")
def graphs():
    out = {}
    for name, (make, _) in FAMILIES.items():
        net = make()
        out[name] = (net, module_to_graph(net))
    return out


def _real_inputs(data, i: int) -> list[str]:
    src, dst = data.edge_index
    return [data.node_names[s] for s in src[(dst == i) & (data.edge_attr == 1)].tolist()]


def _nodes(data, op: str) -> list[int]:
    return [i for i, o in enumerate(data.op_names) if o == op]


# ---- per family ------------------------------------------------------------------------------
def test_mlp_node_sequence_and_parameter_map(graphs):
    _, g = graphs["mlp"]
    assert g.op_names == ["input", "reshape", "linear", "relu", "linear", "relu", "linear", "output"]
    assert g.node_names == ["input", "flatten", "fc0", "act0", "fc1", "act1", "head", "output"]
    assert g.param_names == [[], [], ["fc0.weight", "fc0.bias"], [], ["fc1.weight", "fc1.bias"], [],
                             ["head.weight", "head.bias"], []]
    assert g.x.tolist() == [OPS.index(o) for o in g.op_names]
    assert g.shapes[2].tolist() == [16, 40, 0, 0, 1]
    assert g.shapes[6].tolist() == [10, 16, 0, 0, 1]
    chain = [(i, i + 1) for i in range(7)]  # a chain: real edges are exactly consecutive nodes
    real = g.edge_index[:, g.edge_attr == 1].t().tolist()
    assert sorted(map(tuple, real)) == chain


def test_cnn_conv_nodes_carry_kernel_shapes(graphs):
    _, g = graphs["cnn"]
    convs = _nodes(g, "conv1d")
    assert [g.node_names[i] for i in convs] == ["conv0", "conv1"]
    assert g.shapes[convs[0]].tolist() == [8, 1, 3, 0, 1]  # (out, in, k) + bias flag
    assert g.shapes[convs[1]].tolist() == [8, 8, 3, 0, 1]
    assert "pool" in g.op_names


def test_resnet_residual_adds_and_batchnorm_buffers(graphs):
    net, g = graphs["resnet"]
    adds = _nodes(g, "add")
    assert len(adds) == 2  # one per BasicBlock (stages=2, depth=1)
    assert sorted(_real_inputs(g, adds[0])) == ["act", "stage0.0.bn2"]  # identity shortcut folded
    assert sorted(_real_inputs(g, adds[1])) == ["stage1.0.bn2", "stage1.0.shortcut.1"]
    bns = _nodes(g, "batchnorm2d")
    assert len(bns) == 6
    for i in bns:
        name = g.node_names[i]
        assert g.buffer_names[i] == [f"{name}.running_mean", f"{name}.running_var", f"{name}.num_batches_tracked"]
        assert g.param_names[i] == [f"{name}.weight", f"{name}.bias"]
    stem = g.node_names.index("stem")
    assert g.shapes[stem].tolist() == [4, 1, 3, 3, 0]  # no bias: BN supplies it
    buffers = [b for bs in g.buffer_names for b in bs]
    assert sorted(buffers) == sorted(n for n, _ in net.named_buffers())
    assert not set(buffers) & {n for n, _ in net.named_parameters()}


@pytest.mark.parametrize("family", ["vit", "gpt"])
def test_attention_nodes_and_pos_embed(graphs, family):
    net, g = graphs[family]
    depth = len(net.blocks)
    assert g.op_names.count("matmul") == 2 * depth  # q @ k^T and att @ v
    assert g.op_names.count("softmax") == depth
    pe = g.node_names.index("pos_embed")
    assert g.op_names[pe] == "param" and g.param_names[pe] == ["pos_embed"]
    assert g.shapes[pe].tolist()[:3] == list(net.pos_embed.shape)
    assert _real_inputs(g, pe) == []  # a free parameter: a source node
    scores = g.node_names.index("blocks.0.attn.matmul")
    assert g.node_names[scores + 1] == "blocks.0.attn.mul"  # scaling by 1/sqrt(d)
    if family == "gpt":  # the causal mask is a constant: masked_fill keeps the scores as its only input
        mf = _nodes(g, "masked_fill")
        assert len(mf) == depth and _real_inputs(g, mf[0]) == ["blocks.0.attn.mul"]
        assert g.op_names[g.node_names.index("tok_embed")] == "embedding"
    else:
        assert "masked_fill" not in g.op_names


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_parameter_once_with_its_shape(graphs, family):
    net, g = graphs[family]
    names = [p for ps in g.param_names for p in ps]
    assert sorted(names) == sorted(n for n, _ in net.named_parameters())  # each exactly once
    for i, ps in enumerate(g.param_names):
        row = g.shapes[i].tolist()
        weight = tuple(d for d in row[:MAX_DIMS] if d)
        for p in ps:
            shape = tuple(net.get_parameter(p).shape)
            assert shape == ((weight[0],) if p.endswith(".bias") else weight), (p, shape, row)
        assert row[MAX_DIMS] == int(any(p.endswith(".bias") for p in ps))
        if not ps:
            assert row == [0] * (MAX_DIMS + 1)
    assert g.x.dtype == torch.long and g.x.shape == (g.num_nodes,)
    assert g.op_names[0] == "input" and g.op_names[-1] == "output"


def _distances(n: int, real: torch.Tensor) -> torch.Tensor:
    """All-pairs forward distances by powers of the adjacency matrix (independent of the BFS)."""
    adj = torch.zeros(n, n, dtype=torch.long)
    adj[real[0], real[1]] = 1
    dist = torch.full((n, n), -1, dtype=torch.long)
    reach = torch.eye(n, dtype=torch.long)
    for k in range(1, n):
        reach = (reach @ adj).clamp(max=1)
        dist[(reach > 0) & (dist < 0)] = k
    return dist


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("cutoff", [1, 3, 5])
def test_virtual_edges_match_shortest_paths(graphs, family, cutoff):
    net, g5 = graphs[family]
    g = g5 if cutoff == 5 else module_to_graph(net, cutoff=cutoff)
    real = g.edge_index[:, g.edge_attr == 1]
    dist = _distances(g.num_nodes, real)
    got = {(s, d): a for s, d, a in zip(*g.edge_index.tolist(), g.edge_attr.tolist())}
    n = g.num_nodes
    want = {(s, d): int(dist[s, d]) for s in range(n) for d in range(n) if 1 <= dist[s, d] <= cutoff}
    assert got == want
    assert len(got) == g.edge_index.shape[1]  # no duplicate edges
    assert set(g.edge_attr.tolist()) <= set(range(1, cutoff + 1))


# ---- errors and the fallback -----------------------------------------------------------------
class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


class _WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = _Encoder()

    def forward(self, x):
        return self.encoder(x)


@pytest.mark.parametrize("tracer", ["fx", "hooks"])
def test_unsupported_op_names_op_and_module_path(tracer):
    with pytest.raises(UnsupportedOpError, match=r"unsupported operation LSTM at 'encoder\.rnn'; supported") as e:
        module_to_graph(_WithLSTM(), torch.randn(2, 3, 4), tracer=tracer)
    assert isinstance(e.value, ValueError) and "Linear" in str(e.value)


def test_unsupported_function_names_the_enclosing_module():
    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    with pytest.raises(UnsupportedOpError, match=r"unsupported operation sin at 'body\.1'"):
        module_to_graph(_Wrap(nn.Sequential(nn.Linear(2, 2), Sine())))


class _Wrap(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fallback_matches_fx(graphs, family):
    net, g = graphs[family]
    state = copy.deepcopy(net.state_dict())
    h = module_to_graph(net, FAMILIES[family][1], tracer="hooks")
    assert h.node_names == g.node_names and h.op_names == g.op_names
    assert h.param_names == g.param_names and h.buffer_names == g.buffer_names
    assert torch.equal(h.shapes, g.shapes)
    assert torch.equal(h.edge_index, g.edge_index) and torch.equal(h.edge_attr, g.edge_attr)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())  # BN statistics untouched


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.fc0, self.fc1 = nn.Linear(40, 16), nn.Linear(16, 10)

    def forward(self, x):
        h = self.fc0(x.flatten(1))
        h = torch.relu(h) if h.sum() > -1e9 else torch.tanh(h)
        return self.fc1(h)


def test_untraceable_module_uses_the_fallback():
    net = _Branchy()
    with pytest.raises(GraphError, match="torch.fx cannot trace _Branchy.*example_input"):
        module_to_graph(net)
    g = module_to_graph(net, (1, 40))  # auto: fx fails, the forward pass on a (2, 1, 40) batch works
    assert g.op_names == ["input", "reshape", "linear", "relu", "linear", "output"]  # h.sum() > .. dropped
    assert g.node_names == ["input", "reshape", "fc0", "relu", "fc1", "output"]  # functions: scope.op
    assert g.param_names[2] == ["fc0.weight", "fc0.bias"] and g.param_names[4] == ["fc1.weight", "fc1.bias"]


def test_fallback_reports_a_bad_example_input():
    net = FAMILIES["gpt"][0]()
    with pytest.raises(GraphError, match="forward pass on example_input failed"):
        module_to_graph(net, (16,), tracer="hooks")  # float tokens into an Embedding


def test_unused_parameter_is_an_error():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(GraphError, match=r"\['spare.weight', 'spare.bias'\].*not mapped to any node"):
        module_to_graph(Unused())


# ---- validate --------------------------------------------------------------------------------
def test_validate_catches_corruption(graphs):
    net, g = graphs["resnet"]
    validate(g, net)
    validate(g)

    bad = copy.copy(g)
    bad.param_names = [list(ps) for ps in g.param_names]
    bad.param_names[g.node_names.index("stem")] = []
    with pytest.raises(GraphError, match=r"\['stem.weight'\].*not mapped to any node"):
        validate(bad, net)

    bad.param_names[g.node_names.index("stem")] = ["stem.weight"]
    bad.param_names[g.node_names.index("bn")].append("stem.weight")
    with pytest.raises(GraphError, match="'stem.weight' is mapped twice: to node 'stem' and to node 'bn'"):
        validate(bad)

    bad = copy.copy(g)
    bad.edge_index = g.edge_index.clone()
    bad.edge_index[1, 0] = g.num_nodes + 3
    with pytest.raises(GraphError, match=rf"points to a missing node; the graph has {g.num_nodes} nodes"):
        validate(bad)

    bad = copy.copy(g)
    bad.shapes = g.shapes.clone()
    bad.shapes[g.node_names.index("stem"), 0] += 1
    with pytest.raises(GraphError, match=r"'stem.weight' has shape \(4, 1, 3, 3\), the graph encodes \(5, 1, 3, 3\)"):
        validate(bad, net)

    bad = copy.copy(g)
    bad.x = g.x.clone()
    bad.x[1] = OPS.index("relu")
    with pytest.raises(GraphError, match="node 1 'stem': op id"):
        validate(bad)


def test_bad_arguments():
    net = FAMILIES["mlp"][0]()
    with pytest.raises(GraphError, match="cutoff must be >= 1"):
        module_to_graph(net, cutoff=0)
    with pytest.raises(GraphError, match="valid: auto, fx, hooks"):
        module_to_graph(net, tracer="jit")
    with pytest.raises(GraphError, match="needs example_input|pass example_input"):
        module_to_graph(net, tracer="hooks")
