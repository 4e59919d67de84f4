"""ONNX export: parity with torch at several batch sizes, graph I/O, single file, determinism."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contract.signature import Signature, TensorSpec
from training.errors import ExportError
from training.onnx_export import check_parity, export_onnx, session

N_USERS, N_ITEMS, DIM, HIST, DENSE = 50, 200, 16, 12, 8

SIGNATURE = Signature(
    inputs=(
        TensorSpec("user", "INT64", (1,)),
        TensorSpec("item", "INT64", (1,)),
        TensorSpec("history", "INT64", (HIST,)),
        TensorSpec("dense", "FP32", (DENSE,)),
    ),
    outputs=(
        TensorSpec("score", "FP32", ()),
        TensorSpec("user_vec", "FP32", (DIM,)),
    ),
)


class MixedRanker(nn.Module):
    """Every op the factory's models use: embedding lookups (with a padded, masked-mean history),
    Linear, ReLU, BatchNorm1d and LayerNorm in eval, Dropout, products, concat, sum, sigmoid,
    F.normalize, and two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.user = nn.Embedding(N_USERS, DIM)
        self.item = nn.Embedding(N_ITEMS, DIM)
        self.history = nn.Embedding(N_ITEMS, DIM, padding_idx=0)
        self.fc1 = nn.Linear(4 * DIM + DENSE, 64)
        self.bn = nn.BatchNorm1d(64)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(64, 32)
        self.ln = nn.LayerNorm(32)
        self.out = nn.Linear(32, 1)
        with torch.no_grad():  # non-trivial running stats, so folding BN is actually tested
            assert self.bn.running_mean is not None
            assert self.bn.running_var is not None
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(
        self, user: torch.Tensor, item: torch.Tensor, history: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.user(user).squeeze(1)
        i = self.item(item).squeeze(1)
        mask = (history != 0).unsqueeze(-1).to(u.dtype)
        h = (self.history(history) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        x = torch.cat([u, i, h, u * i, dense], dim=1)
        x = self.drop(torch.relu(self.bn(self.fc1(x))))
        x = self.ln(torch.relu(self.fc2(x)))
        dot = (F.normalize(u, dim=-1) * F.normalize(i, dim=-1)).sum(dim=-1)
        score = torch.sigmoid(self.out(x).squeeze(-1) + dot)
        return score, F.normalize(u + h, dim=-1)


def make_feed(batch: int, seed: int = 0) -> dict[str, npt.NDArray[np.generic]]:
    rng = np.random.default_rng(seed)
    history = rng.integers(1, N_ITEMS, size=(batch, HIST))
    lengths = rng.integers(0, HIST + 1, size=batch)  # some rows have an empty history
    history[np.arange(HIST)[None, :] >= lengths[:, None]] = 0
    return {
        "user": rng.integers(0, N_USERS, size=(batch, 1)),
        "item": rng.integers(0, N_ITEMS, size=(batch, 1)),
        "history": history,
        "dense": rng.standard_normal((batch, DENSE)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def module() -> MixedRanker:
    torch.manual_seed(0)
    return MixedRanker()


@pytest.fixture(scope="module")
def exported(module: MixedRanker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    module.train()  # export must switch to eval itself, and restore this afterwards
    export_onnx(module, SIGNATURE, path, make_feed(4))
    assert module.training
    assert module.drop.training
    return path


@pytest.mark.parametrize("batch", [1, 257])
def test_parity_with_torch(module: MixedRanker, exported: Path, batch: int) -> None:
    err = check_parity(module, exported, make_feed(batch, seed=batch), atol=1e-4)
    assert err <= 1e-4
    assert module.training  # check_parity restores the mode too


def test_graph_io_follows_signature(exported: Path) -> None:
    model = onnx.load(str(exported))
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    elem = {"FP32": onnx.TensorProto.FLOAT, "INT64": onnx.TensorProto.INT64}
    for values, specs in (
        (model.graph.input, SIGNATURE.inputs),
        (model.graph.output, SIGNATURE.outputs),
    ):
        assert [v.name for v in values] == [s.name for s in specs]
        for value, spec in zip(values, specs, strict=True):
            tensor_type = value.type.tensor_type
            assert tensor_type.elem_type == elem[spec.dtype]
            dims = tensor_type.shape.dim
            assert dims[0].dim_param == "batch"
            assert not dims[0].HasField("dim_value")
            assert tuple(d.dim_value for d in dims[1:]) == spec.dims
    sess = session(exported, threads=1)
    assert [i.name for i in sess.get_inputs()] == ["user", "item", "history", "dense"]
    assert sess.get_inputs()[0].shape[0] == "batch"


def test_single_self_contained_file(exported: Path) -> None:
    assert sorted(p.name for p in exported.parent.iterdir()) == ["model.onnx"]  # no temp files
    model = onnx.load(str(exported), load_external_data=False)
    assert model.graph.initializer
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in model.graph.initializer)


def test_no_training_ops_and_deterministic(
    module: MixedRanker, exported: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ops = {n.op_type for n in onnx.load(str(exported)).graph.node}
    assert not ops & {"Dropout", "RandomNormal", "RandomUniform", "Bernoulli"}
    assert "BatchNormalization" not in ops  # folded into the Gemm in eval mode

    again = tmp_path / "again.onnx"
    export_onnx(
        module, SIGNATURE, again, make_feed(1)
    )  # batch-1 example still gives a dynamic axis
    assert capfd.readouterr() == ("", "")  # the exporters' chatter stays out of the build log

    feed = make_feed(33, seed=7)
    first = session(exported).run(None, feed)
    second = session(again).run(None, feed)
    repeat = session(exported).run(None, feed)
    for a, b, c in zip(first, second, repeat, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_variable_length_dims(module: MixedRanker, tmp_path: Path) -> None:
    """A -1 dim in the signature becomes a named symbolic dim, e.g. a ragged history length."""
    history = TensorSpec("history", "INT64", (-1,))
    signature = Signature(
        inputs=(*SIGNATURE.inputs[:2], history, SIGNATURE.inputs[3]), outputs=SIGNATURE.outputs
    )
    path = tmp_path / "ragged.onnx"
    export_onnx(module, signature, path, make_feed(3))
    dims = onnx.load(str(path)).graph.input[2].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "history_1"]
    for length in (1, 5, 30):
        feed = make_feed(4, seed=length)
        feed["history"] = np.resize(feed["history"], (4, length))
        assert check_parity(module, path, feed) <= 1e-4


def test_parity_catches_module_drift(module: MixedRanker, exported: Path) -> None:
    drifted = copy.deepcopy(module)
    with torch.no_grad():
        drifted.out.bias.add_(0.5)
    with pytest.raises(ExportError, match=r"output 'score' differs .* max abs error"):
        check_parity(drifted, exported, make_feed(16))


def test_parity_needs_every_input(module: MixedRanker, exported: Path) -> None:
    feed = make_feed(2)
    del feed["dense"]
    with pytest.raises(ExportError, match="dense"):
        check_parity(module, exported, feed)


def test_example_must_match_signature(module: MixedRanker, tmp_path: Path) -> None:
    feed = make_feed(2)
    feed["dense"] = feed["dense"].astype(np.float64)
    with pytest.raises(ExportError, match="dense") as info:
        export_onnx(module, SIGNATURE, tmp_path / "m.onnx", feed)
    assert isinstance(info.value.__cause__, ValueError)
    assert not list(tmp_path.iterdir())


def test_output_count_must_match_signature(module: MixedRanker, tmp_path: Path) -> None:
    one_output = Signature(inputs=SIGNATURE.inputs, outputs=SIGNATURE.outputs[:1])
    with pytest.raises(ExportError, match="2 output"):
        export_onnx(module, one_output, tmp_path / "m.onnx", make_feed(2))


class DataDependent(nn.Module):
    """Python control flow on a tensor value: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.fc(x)
        if x.sum() > 0:
            return y
        return -y


def test_falls_back_to_torchscript_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (4,)),), outputs=(TensorSpec("y", "FP32", (1,)),)
    )
    path = tmp_path / "dd.onnx"
    module = DataDependent()
    torch_level = logging.getLogger("torch").level
    with caplog.at_level(logging.WARNING, logger="cascade.training"):
        export_onnx(module, signature, path, {"x": np.ones((3, 4), np.float32)})
    assert capfd.readouterr() == ("", "")  # torch.export's partial-graph dump is captured too
    assert logging.getLogger("torch").level == torch_level  # quieting is temporary
    (record,) = [r for r in caplog.records if r.name == "cascade.training"]
    assert "falling back to the TorchScript exporter" in record.getMessage()
    assert "DataDependent" in record.getMessage()
    feed = {"x": np.ones((5, 4), np.float32)}  # the traced branch
    assert check_parity(module, path, feed) <= 1e-5
    assert session(path).get_outputs()[0].shape == ["batch", 1]


def test_session_rejects_bad_thread_count(exported: Path) -> None:
    with pytest.raises(ValueError, match="threads"):
        session(exported, threads=0)


def test_session_wraps_unloadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ExportError, match=r"bad\.onnx"):
        session(bad)
