"""The one-call ranking model: both rankers and the combiner composed into one ONNX graph.

Composed from the ONNX files the separate models ship (after the INT8 gate), not exported
again, so the one-call model computes exactly what the separate ones do and needs no gate of
its own. In front of them, a few nodes turn the compact request into the rankers' inputs:
each candidate's user row is gathered by ``owner``, its item row from the item table (an
initializer: row 0 is zeros, row ``i + 1`` item ``i``), and the candidate is blanked out of
its user's history, as the separate path does before sending. Signature:
:func:`contract.ranking.ranking_signature`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from contract.arrays import FloatArray, IntArray
from contract.features import FeatureTables
from contract.names import COMBINER, RANKERS
from contract.ranking import ranking_signature
from contract.signature import Signature
from training.candidates import Found
from training.errors import ExportError
from training.feeds import ranker_feed
from training.onnx_export import save_atomic, session

#: What the rankers take, in the names their ONNX graphs use.
_RANKER_INPUTS = ("user_id", "item_id", "user_dense", "item_dense", "history")
_ELEM = {"FP32": TensorProto.FLOAT, "INT64": TensorProto.INT64}


def combiner_width(combiner: Path) -> int:
    """How many scores the combiner blends (3, or 4 with the item-item score)."""
    model = onnx.load(str(combiner))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        raise ExportError(f"{combiner}: the combiner's input is not (batch, n_scores)")
    return int(dims[1].dim_value)


def fuse_ranking(
    rankers: Mapping[str, Path], combiner: Path, item_dense: FloatArray, target: Path
) -> Signature:
    """Write the one-call model to ``target`` and return its signature.

    ``rankers`` maps each of :data:`~contract.names.RANKERS` to its shipped ``model.onnx``;
    ``item_dense`` is the served item table (``n_items`` rows, the catalog's order).
    """
    width = combiner_width(combiner)
    if width not in (3, 4):
        raise ExportError(f"{combiner}: a combiner of {width} scores cannot be composed")
    loaded = {name: onnx.load(str(rankers[name])) for name in RANKERS}
    user_dense = loaded[RANKERS[0]].graph.input[2].type.tensor_type.shape.dim[1]
    signature = ranking_signature(int(user_dense.dim_value), item_item=width == 4)

    parts = {name: compose.add_prefix(model, f"{name}/") for name, model in loaded.items()}
    parts["combiner"] = compose.add_prefix(onnx.load(str(combiner)), "combiner/")
    table = np.zeros((item_dense.shape[0] + 1, item_dense.shape[1]), dtype=np.float32)
    table[1:] = item_dense

    initializers = [
        numpy_helper.from_array(table, "item_table"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
    ]
    nodes = [
        helper.make_node("Gather", ["user_id", "owner"], ["c_user_id"], axis=0),
        helper.make_node("Gather", ["user_dense", "owner"], ["c_user_dense"], axis=0),
        helper.make_node("Gather", ["history", "owner"], ["c_history_full"], axis=0),
        helper.make_node("Equal", ["c_history_full", "item_id"], ["c_in_history"]),
        helper.make_node("Where", ["c_in_history", "zero", "c_history_full"], ["c_history"]),
        helper.make_node("Squeeze", ["item_id", "axis_1"], ["c_item_row"]),
        helper.make_node("Gather", ["item_table", "c_item_row"], ["c_item_dense"], axis=0),
    ]
    feeds = {
        "user_id": "c_user_id",
        "item_id": "item_id",
        "user_dense": "c_user_dense",
        "item_dense": "c_item_dense",
        "history": "c_history",
    }
    logits: list[str] = []
    for name in RANKERS:
        graph = parts[name].graph
        names = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
        if names != [f"{name}/{n}" for n in _RANKER_INPUTS]:
            raise ExportError(f"{rankers[name]}: inputs {names} are not the rankers' inputs")
        nodes += [helper.make_node("Identity", [feeds[n]], [f"{name}/{n}"]) for n in _RANKER_INPUTS]
        nodes += list(graph.node)
        initializers += list(graph.initializer)
        logits.append(graph.output[0].name)
    blend = parts["combiner"].graph
    columns = [*logits, "retrieval"] + (["item_item"] if width == 4 else [])
    nodes.append(helper.make_node("Concat", columns, [blend.input[0].name], axis=1))
    nodes += list(blend.node)
    initializers += list(blend.initializer)
    nodes.append(helper.make_node("Identity", [blend.output[0].name], ["score"]))

    graph = helper.make_graph(
        nodes,
        "ranking",
        [
            helper.make_tensor_value_info(
                spec.name, _ELEM[spec.dtype], [_dim(spec.name, d) for d in spec.dims]
            )
            for spec in signature.inputs
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["candidates", 1])],
        initializers,
    )
    opsets: dict[str, int] = {}
    for part in parts.values():
        for opset in part.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()],
        producer_name="cascade",
    )
    model.ir_version = max(part.ir_version for part in parts.values())
    save_atomic(model, target)
    return signature


def _dim(name: str, dim: int) -> str | int:
    """Symbolic leading axes: users for the user inputs, candidates for the rest."""
    if dim != -1:
        return dim
    return "users" if name in ("user_id", "user_dense", "history") else "candidates"


def fused_feed(
    features: FeatureTables,
    users: IntArray,
    items: IntArray,
    retrieval: FloatArray,
    item_item: FloatArray,
) -> dict[str, npt.NDArray[Any]]:
    """The one-call model's feed for each of ``users``' candidates (rows of ``items``, -1
    padded): user features once per user, candidates by id with their owner row."""
    valid = items >= 0
    owner = np.broadcast_to(np.arange(len(users))[:, None], items.shape)[valid]
    return {
        "user_id": (users + 1).astype(np.int64)[:, None],
        "user_dense": features.user_dense[users].astype(np.float32),
        "history": features.history[users].astype(np.int64),
        "item_id": (items[valid] + 1).astype(np.int64)[:, None],
        "owner": owner.astype(np.int64),
        "retrieval": retrieval[valid].astype(np.float32)[:, None],
        "item_item": np.nan_to_num(item_item[valid]).astype(np.float32)[:, None],
    }


def check_fused(
    path: Path, separate: Mapping[str, Path], features: FeatureTables, found: Found
) -> dict[str, Any]:
    """The one-call model against the separate ones on validation candidates (a few users,
    all their candidates): the largest score difference (raises past 1e-4), and one user's
    request both ways: bytes sent and p50 time on one thread."""
    users, items = found.users[:8], found.items[:8]
    feed = fused_feed(features, users, items, found.scores[:8], found.item_item[:8])
    one_call = session(path, threads=1)
    sessions = {name: session(p, threads=1) for name, p in separate.items()}

    def run_separate(feed: Mapping[str, npt.NDArray[Any]]) -> tuple[FloatArray, int]:
        owner = feed["owner"]
        wide = ranker_feed(features, users[owner], feed["item_id"][:, 0] - 1)
        logits = [sessions[name].run(None, dict(wide))[0] for name in RANKERS]
        scores = np.concatenate([*logits, feed["retrieval"], feed["item_item"]], axis=1)
        out = sessions[COMBINER].run(None, {"scores": scores.astype(np.float32)})[0]
        sent = 2 * sum(a.nbytes for a in wide.values()) + scores.nbytes
        return np.asarray(out, dtype=np.float32), sent

    fused = np.asarray(one_call.run(None, dict(feed))[0])
    expected, _ = run_separate(feed)
    error = float(np.abs(fused - expected).max())
    if not error <= 1e-4:
        raise ExportError(f"{path}: one-call scores differ from the separate models by {error}")
    single = fused_feed(features, users[:1], items[:1], found.scores[:1], found.item_item[:1])
    _, separate_bytes = run_separate(single)
    return {
        "max_abs_error": error,
        "candidates": len(single["item_id"]),
        "bytes_one_call": int(sum(a.nbytes for a in single.values())),
        "bytes_separate": int(separate_bytes),
        "p50_ms_one_call": _p50_ms(lambda: one_call.run(None, dict(single))),
        "p50_ms_separate": _p50_ms(lambda: run_separate(single)),
    }


def _p50_ms(call: Callable[[], object], repeats: int = 30) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
