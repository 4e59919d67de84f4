"""The recommendation graph end to end: Triton, Ray Serve and the app, on a MovieLens build.

One graph per session (``graph`` fixture); fault scenarios redeploy it with a changed config
and restore the default afterwards.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil  # type: ignore[import-untyped]
import pytest

from contract.graph_config import AdmissionConfig, FaultConfig, GraphConfig, StageBudgets
from contract.names import SIMILAR_FILE, USER_TOWER
from contract.ranking import RANKING
from inference.graph.catalog import Catalog
from inference.graph.launcher import GraphServer, haproxy_folder
from inference.triton.server import free_port
from training.repository import ModelRepository

pytestmark = pytest.mark.integration

USERS = ("1", "42", "405")
#: Functional tests must not depend on how busy the machine is, so the session's graph gets
#: generous budgets; the fault tests redeploy with the reference budgets they check.
RELAXED = GraphConfig(
    budgets=StageBudgets(retrieval_ms=1000, ranking_ms=2000, rerank_ms=100, total_ms=4000)
)


def post(url: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data, {"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read()), reply.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers


def recommend(graph: GraphServer, user: str, k: int = 10, **extra: Any) -> dict[str, Any]:
    status, body, _ = post(f"{graph.url}/v1/recommend", {"user_id": user, "k": k, **extra})
    assert status == 200, body
    answer: dict[str, Any] = body
    return answer


@pytest.fixture(scope="session")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces") / "spans.jsonl"


@pytest.fixture(scope="session")
def graph(movielens_repo: Path, trace_file: Path) -> Iterator[GraphServer]:
    mp = pytest.MonkeyPatch()
    mp.setenv("CASCADE_TRACE_FILE", str(trace_file))  # inherited by every Ray process
    server = GraphServer(
        movielens_repo,
        graph=RELAXED,
        http_port=free_port(),
        grpc_port=free_port(),
        ranking_placement="deployment",  # the two-deployment app; inline has its own test
    )
    try:
        with server:
            yield server
    finally:
        mp.undo()


@pytest.fixture
def redeploy(graph: GraphServer) -> Iterator[Any]:
    """Redeploy the graph with changes for one test, then restore the defaults."""
    original = graph.settings
    assert original is not None
    yield graph.redeploy
    graph.redeploy(
        graph=original.graph,
        repository=original.repository,
        triton_grpc=original.triton_grpc,
        ranking_placement=original.ranking_placement,
        experiments=None,
        experiment=None,
        event_store=None,
    )


@pytest.fixture(scope="session")
def catalog(movielens_repo: Path) -> Catalog:
    return Catalog.load(ModelRepository(movielens_repo).version_dir("user_tower", 1))


def test_recommendations_are_deterministic_and_unseen(graph: GraphServer, catalog: Catalog) -> None:
    for user in USERS:
        first, second = recommend(graph, user), recommend(graph, user)
        assert [i["item_id"] for i in first["items"]] == [i["item_id"] for i in second["items"]]
        assert len(first["items"]) == 10
        assert first["fallbacks"] == [], first
        assert first["stages"] == ["features", "retrieval", "ranking", "rerank"]
        assert first["model_versions"] == {
            "user_tower": 1,
            "ranker_dcn": 1,
            "ranker_mlp": 1,
            "combiner": 1,
        }
        seen = {catalog.item_ids[i] for i in catalog.seen(catalog.user_index[user])}
        assert not seen & {i["item_id"] for i in first["items"]}
        assert all(i["title"] for i in first["items"])


def test_unknown_user_gets_popular_items_for_the_demographic(
    graph: GraphServer, catalog: Catalog
) -> None:
    context = {"gender": "F", "age": "30"}
    answer = recommend(graph, "someone-new", k=5, context=context)
    assert answer["known_user"] is False
    assert answer["stages"] == ["features", "cold_start", "rerank"]
    pool = {catalog.item_ids[i] for i in catalog.popular_for(context, 50)}
    assert {i["item_id"] for i in answer["items"]} <= pool


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"k": 5}, 400, "user_id: required"),
        ({"user_id": "1", "k": 0}, 400, "k: 0 is outside"),
        ({"user_id": "1", "k": 10_000}, 400, "k: 10000 is outside"),
        ({"user_id": "1", "k": True}, 400, "k: expected an integer"),
        ({"user_id": "1", "k": "5"}, 400, "k: expected an integer"),
        ({"user_id": True}, 400, "user_id: expected a string or an integer"),
        ({"user_id": "1", "colour": "red"}, 400, "colour: unknown field"),
        ({"user_id": ""}, 400, "user_id: must not be empty"),
        ({"user_id": "x" * 60_000}, 400, "user_id: 60000 characters"),
        ({"user_id": "new-1", "context": {"age": "99999999999999999999"}}, 400, "context.age"),
        ({"user_id": "new-1", "context": {"mood": "calm"}}, 400, "context.mood: unknown key"),
        (b'{"user_id": "\\ud800"}', 400, "user_id: not valid Unicode"),
        (b"[" * 5000 + b"]" * 5000, 400, "body: JSON nested deeper"),
        (b"{not json", 400, "body: not valid JSON"),
    ],
)
def test_bad_json_requests_get_4xx_naming_the_field(
    graph: GraphServer, body: dict[str, Any], status: int, field: str
) -> None:
    got, answer, _ = post(f"{graph.url}/v1/recommend", body)
    assert (got, set(answer)) == (status, {"error"}), answer  # one shape for every mistake
    assert field in answer["error"]


def test_mistakes_are_counted_as_what_the_client_received(graph: GraphServer) -> None:
    def refused() -> float:
        with urllib.request.urlopen(f"{graph.url}/metrics") as reply:
            text = reply.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("cascade_requests_total{") and 'code="400"' in line
        )

    before = refused()
    post(f"{graph.url}/v1/recommend", {"user_id": True})
    post(f"{graph.url}/v2/models/recommender/infer", b"{not json")
    assert refused() - before == 2


def test_json_without_a_json_content_type_is_read(graph: GraphServer) -> None:
    """What ``curl -d`` sends: JSON labelled as a form."""
    status, answer, _ = post(
        f"{graph.url}/v1/recommend",
        b'{"user_id": "1", "context": {"age": 30}}',
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, answer


def test_a_chunked_body_counts_against_the_limit(graph: GraphServer) -> None:
    import http.client

    host, port = graph.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    chunk = b"x" * 16_384

    def chunks() -> Any:
        yield b'{"user_id": "'
        for _ in range(1024):  # 16 MB if nothing stopped it
            yield chunk

    try:
        connection.request(
            "POST",
            "/v1/recommend",
            body=chunks(),
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        reply = connection.getresponse()
        assert reply.status == 413
        assert "exceeds the limit" in json.loads(reply.read())["error"]
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the client finished sending: refused
    finally:
        connection.close()


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, json.loads(reply.read() or b"{}")  # Triton's ready: no body
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_model_paths_versions_and_config(graph: GraphServer) -> None:
    """OIP's versioned and config routes, a missing version a 404 naming it, path parameters
    escaped on the way to Triton, and every error in the protocol's shape."""
    base = f"{graph.url}/v2/models"
    assert get(f"{base}/recommender/versions/1")[1]["name"] == "recommender"
    assert get(f"{base}/recommender/versions/1/ready") == (
        200,
        {"name": "recommender", "ready": True},
    )
    status, config = get(f"{base}/recommender/config")
    assert (status, config["max_batch_size"], config["input"][0]["name"]) == (200, 64, "user_id")
    status, answer = get(f"{base}/recommender/versions/7/ready")
    assert status == 404
    assert "version '7' does not exist" in answer["error"]
    status, answer, _ = post(f"{base}/recommender/versions/7/infer", OIP_ONE_USER)
    assert status == 404
    assert "version '7'" in answer["error"]
    assert get(f"{base}/ranker_dcn/versions/1/ready")[0] == 200  # Triton's, passed through
    assert get(f"{base}/ranker_dcn/config")[1]["name"] == "ranker_dcn"
    status, answer = get(f"{base}/ranker_dcn%3F/ready")  # not "ranker_dcn" plus a query
    assert status in (400, 404)
    assert set(answer) == {"error"}
    status, answer = get(f"{graph.url}/v2/repository/index")
    assert (status, set(answer)) == (405 if status == 405 else 404, {"error"})


OIP_ONE_USER: dict[str, Any] = {
    "inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["1"]}]
}


def test_bad_oip_requests_get_400_naming_the_field(graph: GraphServer) -> None:
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"parameters": {"age": "99999999999999999999"}}, "parameters['age']"),
        ({"parameters": {"age": 30}}, None),  # a number is what users send: accepted
    ]
    for extra, field in cases:
        status, answer, _ = post(
            f"{graph.url}/v2/models/recommender/infer", {**OIP_ONE_USER, **extra}
        )
        if field is None:
            assert status == 200, answer
        else:
            assert status == 400, answer
            assert field in answer["error"]
    deep = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, answer, _ = post(f"{graph.url}/v2/models/recommender/infer", deep)
    assert status == 400
    assert "nested deeper" in answer["error"]
    bad = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    status, answer, _ = post(f"{graph.url}/v2/models/recommender/infer", bad)
    assert status == 400
    assert "user_id" in answer["error"]
    status, answer, _ = post(f"{graph.url}/v2/models/recommender/infer", b"{not json")
    assert status == 400
    assert "body" in answer["error"]
    status, answer, _ = post(f"{graph.url}/v1/recommend", b"x" * 100_000)
    assert status == 413
    assert "limit" in answer["error"]


def test_tritonclient_calls_the_graph_and_single_models(graph: GraphServer) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    expected = [i["item_id"] for i in recommend(graph, "42", k=5)["items"]]
    for module, url in (
        (httpclient, graph.url.removeprefix("http://")),
        (grpcclient, graph.grpc_url),
    ):
        client = module.InferenceServerClient(url)
        assert client.is_server_live()
        assert client.is_server_ready()
        user = module.InferInput("user_id", [1], "BYTES")
        user.set_data_from_numpy(np.array([b"42"], dtype=object))
        k = module.InferInput("k", [1], "INT32")
        k.set_data_from_numpy(np.array([5], dtype=np.int32))
        result = client.infer("recommender", [user, k])
        got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("item_ids")[0]]
        assert got == expected
        assert result.as_numpy("scores").shape == (1, 5)
        metadata = client.get_model_metadata("user_tower")
        assert metadata is not None
        tower = [
            module.InferInput("user_id", [2, 1], "INT64"),
            module.InferInput("user_dense", [2, 55], "FP32"),
            module.InferInput("history", [2, 20], "INT64"),
        ]
        tower[0].set_data_from_numpy(np.array([[1], [2]], dtype=np.int64))
        tower[1].set_data_from_numpy(np.zeros((2, 55), dtype=np.float32))
        tower[2].set_data_from_numpy(np.zeros((2, 20), dtype=np.int64))
        embedding = client.infer("user_tower", tower).as_numpy("user_embedding")
        assert embedding.shape[0] == 2
        assert np.isfinite(embedding).all()
        client.close()


def test_grpc_bad_request_is_invalid_argument(graph: GraphServer) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(graph.grpc_url)
    user = grpcclient.InferInput("user_id", [1], "BYTES")
    user.set_data_from_numpy(np.array([b"42"], dtype=object))
    k = grpcclient.InferInput("k", [1], "INT32")
    k.set_data_from_numpy(np.array([0], dtype=np.int32))
    with pytest.raises(InferenceServerException) as error:
        client.infer("recommender", [user, k])
    assert "INVALID_ARGUMENT" in str(error.value.status())
    assert "k" in error.value.message()
    client.close()


def test_fuzzing_the_openapi_schema_and_oip_bodies_finds_no_unexpected_5xx(
    graph: GraphServer,
) -> None:
    """schemathesis (valid and invalid cases of every operation in ``/openapi.json``) and
    hypothesis-made OIP bodies, as ``benchmarks/reliability.py`` runs them at more examples."""
    from benchmarks.reliability import fuzz

    result = fuzz(graph.url, examples=15)
    assert result["requests"] > 100, result
    assert result["unexpected_5xx"] == 0, result["examples"]
    assert set(result["statuses"]) >= {"200", "400", "404"}, result["statuses"]


def test_grpc_edges_answer_with_the_right_status(graph: GraphServer) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(graph.grpc_url)
    user = grpcclient.InferInput("user_id", [1], "BYTES")
    user.set_data_from_numpy(np.array([b"new-1"], dtype=object))

    def status_of(call: Any) -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as error:
            call()
        return str(error.value.status()), str(error.value.message())

    try:
        status, message = status_of(
            lambda: client.infer("recommender", [user], parameters={"age": "99999999999999999999"})
        )
        assert (status, "parameters['age']" in message) == ("StatusCode.INVALID_ARGUMENT", True)
        assert status_of(lambda: client.infer("recommender", [user], model_version="7"))[0] == (
            "StatusCode.NOT_FOUND"
        )
        assert status_of(lambda: client.is_model_ready("recommender", "7"))[0] == (
            "StatusCode.NOT_FOUND"
        )
        config = client.get_model_config("recommender", as_json=True)["config"]
        assert config["max_batch_size"] == 64
        assert client.get_model_config("combiner", as_json=True)["config"]["name"] == "combiner"
        for call in (
            client.get_model_repository_index,
            lambda: client.load_model("combiner"),
            lambda: client.unload_model("combiner"),
        ):
            assert status_of(call)[0] == "StatusCode.UNIMPLEMENTED"
        assert (
            client.infer("recommender", [user], parameters={"age": 30}).as_numpy("item_ids")
            is not None
        )
    finally:
        client.close()


def test_trace_continues_the_callers_traceparent(graph: GraphServer, trace_file: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    header = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    status, _, headers = post(f"{graph.url}/v1/recommend", {"user_id": "7"}, header)
    assert status == 200
    assert headers["traceparent"].split("-")[1] == trace_id
    spans: list[dict[str, Any]] = []
    for _ in range(40):
        if trace_file.exists():
            spans = [json.loads(line) for line in trace_file.read_text().splitlines()]
            spans = [s for s in spans if s["trace_id"] == trace_id]
            if {"ranking.batch", "recommend"} <= {s["name"] for s in spans}:
                break
        asyncio.run(asyncio.sleep(0.25))
    names = {s["name"] for s in spans}
    assert {"recommend", "stage.features", "stage.retrieval", "stage.ranking"} <= names
    assert "ranking.batch" in names  # recorded by the ranking replica, another process
    root = next(s for s in spans if s["name"] == "recommend")
    assert root["parent_id"] == "00f067aa0ba902b7"


def test_metrics_and_health_and_openapi(graph: GraphServer) -> None:
    recommend(graph, "1")
    with urllib.request.urlopen(f"{graph.url}/metrics") as reply:
        text = reply.read().decode()
    for name in (
        "cascade_requests_total",
        "cascade_request_duration_seconds_bucket",
        "cascade_stage_duration_seconds_bucket",
        "cascade_feature_cache_lookups_total",
        "cascade_in_flight_requests",
        "cascade_ranking_batch_size_bucket",
        'cascade_model_version_info{model="ranker_dcn",version="1"} 1.0',
    ):
        assert name in text
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/recommender/ready"):
        with urllib.request.urlopen(f"{graph.url}{path}") as reply:
            assert reply.status == 200
    with urllib.request.urlopen(f"{graph.url}/openapi.json") as reply:
        paths = json.loads(reply.read())["paths"]
    assert "/v1/recommend" in paths
    assert "/v2/models/{name}/infer" in paths


@pytest.mark.parametrize(
    ("stage", "fallback"),
    [("retrieval", "retrieval:popular"), ("ranking", "ranking:retrieval_order")],
)
def test_slow_stage_falls_back_within_the_budget(
    graph: GraphServer, redeploy: Any, stage: str, fallback: str
) -> None:
    redeploy(graph=GraphConfig(faults=FaultConfig(delay_ms={stage: 80.0})))
    answer = recommend(graph, "42")
    assert answer["fallbacks"] == [fallback]
    assert len(answer["items"]) == 10
    assert answer["latency_ms"] < 50.0


def test_triton_stopped_falls_back_to_popular(
    graph: GraphServer, redeploy: Any, movielens_repo: Path
) -> None:
    """A Triton of its own for this test, stopped while the graph serves from it."""
    from contract.names import MODELS
    from inference.triton.server import TritonServer

    with TritonServer(movielens_repo, models=list(MODELS)) as doomed:
        redeploy(graph=GraphConfig(), triton_grpc=doomed.grpc_url)
        served = recommend(graph, "42")
        assert "retrieval" in served["stages"]  # retrieval ran on this Triton
        assert "retrieval:popular" not in served["fallbacks"]
    answer = recommend(graph, "42")  # the server is gone now
    assert answer["fallbacks"] == ["retrieval:popular"]
    assert len(answer["items"]) == 10
    assert answer["latency_ms"] < 50.0
    with urllib.request.urlopen(f"{graph.url}/metrics") as reply:
        text = reply.read().decode()
    assert 'cascade_fallbacks_total{fallback="popular",stage="retrieval"}' in text


def test_the_run_keeps_its_files_private(graph: GraphServer) -> None:
    """Ray's session and HAProxy's config and admin socket live in one 0700 folder of this
    run's own (Ray's defaults are shared folders, the admin socket ``mode 666``)."""
    import stat

    from inference.graph.launcher import run_directory

    run = run_directory()
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    (config_file,) = (run / "h").glob("*/haproxy.cfg")  # one folder per Ray node
    config = config_file.read_text()
    assert f"stats socket {config_file.parent / 'admin.sock'}" in config
    assert (config_file.parent / "admin.sock").is_socket()
    assert any((run / "ray").glob("session_*"))
    for default_port in ("9101", "8404", "9500", "8500"):  # Ray's fixed defaults
        assert f":{default_port}\n" not in config


def test_killed_triton_degrades_answers_until_it_is_restarted(graph: GraphServer) -> None:
    """kill -9 of the graph's own Triton: every request is still answered (with fallbacks),
    readiness says which stages degrade, and full-quality answers come back on their own."""
    import os
    import signal
    import time

    assert graph.supervisor is not None
    assert graph.triton is not None
    assert graph.triton.process is not None
    assert recommend(graph, "42")["fallbacks"] == []
    restarts = graph.supervisor.restarts
    os.killpg(graph.triton.process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while graph.supervisor.state != "restarting" and time.monotonic() < deadline:
        time.sleep(0.05)
    with urllib.request.urlopen(f"{graph.url}/v2/health/ready") as reply:
        assert reply.status == 200
        health = json.loads(reply.read())
    assert set(health["degraded"]) == {"retrieval", "ranking"}, health
    degraded = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        answer = recommend(graph, "42")  # asserts 200
        assert len(answer["items"]) == 10
        if not answer["fallbacks"]:
            break
        degraded += 1
        time.sleep(0.1)
    else:
        raise AssertionError(f"no full-quality answer 90 s after the kill: {answer}")
    assert degraded > 0
    assert graph.supervisor.restarts == restarts + 1
    assert graph.supervisor.state == "ready"
    with urllib.request.urlopen(f"{graph.url}/v2/health/ready") as reply:
        assert json.loads(reply.read()) == {"ready": True}


def test_combiner_gone_falls_back_to_one_ranker(graph: GraphServer) -> None:
    """Real faults: the combiner unloaded from Triton while the graph serves. The one-call
    ranking model holds the combiner too, so answers stay whole; with it unloaded as well,
    the separate models answer and the missing combiner falls back to one ranker."""
    from inference.triton.client import TritonClient

    assert graph.triton is not None
    with TritonClient(graph.triton.grpc_url) as triton:
        triton.unload_model("combiner")
        try:
            whole = recommend(graph, "42")
            triton.unload_model(RANKING)
            try:
                answer = recommend(graph, "42")
            finally:
                triton.load_model(RANKING)
        finally:
            triton.load_model("combiner")
    assert whole["fallbacks"] == []
    assert answer["fallbacks"] == ["combiner:ranker_dcn"]
    assert answer["stages"] == ["features", "retrieval", "ranking", "rerank"]
    assert recommend(graph, "42")["fallbacks"] == []


def test_overload_is_refused_at_once_with_retry_after(graph: GraphServer, redeploy: Any) -> None:
    redeploy(
        graph=GraphConfig(
            admission=AdmissionConfig(max_in_flight=2),
            faults=FaultConfig(delay_ms={"ranking": 200.0}),
        )
    )

    async def burst() -> list[tuple[int, str | None]]:
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def one(user: int) -> tuple[int, str | None]:
                async with session.post(
                    f"{graph.url}/v1/recommend", json={"user_id": str(user)}
                ) as reply:
                    await reply.read()
                    return reply.status, reply.headers.get("Retry-After")

            return await asyncio.gather(*(one(u) for u in range(1, 13)))

    results = asyncio.run(burst())
    refused = [r for r in results if r[0] == 503]
    assert refused
    assert all(after == "1" for _, after in refused)
    assert any(status == 200 for status, _ in results)
    # The HAProxy in front refuses at the redeployed limit (Ray reloaded it for the new
    # replica), so a refusal waits for no replica.
    rules = [line for line in haproxy_config().splitlines() if "be_conn(" in line]
    assert rules
    assert all(line.endswith(" ge 2 }") for line in rules)


def test_slow_clients_take_no_admission_slot(graph: GraphServer) -> None:
    """More slow clients than the admission limit (each sends its head and a byte of its
    body, then stalls): the HAProxy in front holds their requests, so a normal one is
    still admitted and answered."""
    assert graph.settings is not None
    limit = graph.settings.graph.admission.max_in_flight
    host, port = graph.url.removeprefix("http://").split(":")
    slow = []
    try:
        for _ in range(limit + 6):
            sock = socket.create_connection((host, int(port)))
            slow.append(sock)
            sock.sendall(
                b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{"
            )
        time.sleep(0.5)
        status, body, _ = post(f"{graph.url}/v1/recommend", {"user_id": "42"})
        assert status == 200, body
    finally:
        for sock in slow:
            sock.close()


def haproxy_config() -> str:
    (config,) = haproxy_folder().glob("*/haproxy.cfg")
    return config.read_text()


def test_every_listener_of_the_local_graph_is_on_loopback(graph: GraphServer) -> None:
    """Ray's GCS, raylet, workers and agents, HAProxy's stats and metrics, Triton: nothing
    the graph starts listens beyond the machine unless configured to."""
    listening = []
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.append((process.name(), conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    names = {name for name, _, _ in listening}
    assert {"haproxy", "raylet", "gcs_server", "tritonserver"} <= names, names
    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")  # the last: a dual-stack socket
    exposed = [entry for entry in listening if entry[1] not in loopback]
    assert not exposed
    assert " bind *:" not in haproxy_config()


def test_inline_ranking_gives_the_same_answers(graph: GraphServer, redeploy: Any) -> None:
    expected = {user: recommend(graph, user)["items"] for user in USERS}
    redeploy(graph=RELAXED, ranking_placement="inline")
    for user in USERS:
        answer = recommend(graph, user)
        assert answer["fallbacks"] == []
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in expected[user]]


def test_experiment_variants_serve_their_config_and_log_exposures(
    graph: GraphServer, redeploy: Any, tmp_path: Path
) -> None:
    """The variant picks the graph config, the response says which, the exposure is logged
    once served, and the analysis JSON reads the log."""
    from ab_router.stores.sqlite import SqliteEventStore

    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(
        json.dumps(
            {
                "layers": [
                    {
                        "name": "ranking",
                        "experiments": [
                            {
                                "name": "diversity",
                                "layer": "ranking",
                                "status": "running",
                                "variants": [
                                    {"name": "control", "weight": 50},
                                    {
                                        "name": "treatment",
                                        "weight": 50,
                                        "config": {"rerank": {"mmr_lambda": 0.0}},
                                    },
                                ],
                                "metrics": [{"name": "click", "role": "primary"}],
                            }
                        ],
                    }
                ]
            }
        )
    )
    store = tmp_path / "events.db"
    redeploy(experiments=experiments, experiment="diversity", event_store=str(store))
    users = [str(u) for u in range(1, 41)]
    answers = {user: recommend(graph, user) for user in users}
    variants = {user: a["assignment"]["variant"] for user, a in answers.items()}
    assert set(variants.values()) == {"control", "treatment"}
    assert all(a["assignment"]["experiment"] == "diversity" for a in answers.values())

    def genres(answer: dict[str, Any]) -> int:
        return len({g for item in answer["items"] for g in item["genres"]})

    # Pure genre novelty (lambda 0) spreads the top 10 over more genres than control's blend.
    by_variant = {
        v: [genres(a) for u, a in answers.items() if variants[u] == v]
        for v in ("control", "treatment")
    }
    assert np.mean(by_variant["treatment"]) > np.mean(by_variant["control"])
    logged: list[Any] = []
    for _ in range(40):
        reader = SqliteEventStore(store)
        logged = reader.exposures("diversity")
        reader.close()
        if len(logged) >= len(users):
            break
        asyncio.run(asyncio.sleep(0.25))
    # One exposure per request served: the redeploy's warm-up requests (users 1-20 again)
    # are answered but never logged.
    assert sorted(e.unit_id for e in logged) == sorted(users)
    assert {e.unit_id: e.variant for e in logged} == variants
    with urllib.request.urlopen(f"{graph.url}/v1/experiments/diversity") as reply:
        analysis = json.loads(reply.read())
    assert analysis["experiment"] == "diversity"
    assert sum(analysis["counts"].values()) == len(users)
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{graph.url}/v1/experiments/nope")
    missing.value.close()  # the error holds the response's socket
    assert missing.value.code == 404


# --------------------------------------------------------------------------- similar items

#: Star Wars (1977), in every MovieLens-100k build; user 42 has seen it and plenty else.
SIMILAR_TO = "50"


def similar(graph: GraphServer, item: str, k: int = 10, **extra: Any) -> dict[str, Any]:
    status, body, _ = post(f"{graph.url}/v1/similar", {"item_id": item, "k": k, **extra})
    assert status == 200, body
    answer: dict[str, Any] = body
    return answer


def answered(answer: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in answer["items"]]


def neighbours_of(directory: Path, index: int) -> set[int]:
    from scipy import sparse

    matrix = sparse.load_npz(directory / SIMILAR_FILE).tocsr()
    return {int(i) for i in matrix.indices[matrix.indptr[index] : matrix.indptr[index + 1]]}


def test_similar_items_over_json_and_both_oip_clients(
    graph: GraphServer, catalog: Catalog, movielens_repo: Path
) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    directory = ModelRepository(movielens_repo).version_dir(USER_TOWER, 1)
    query = catalog.item_index[SIMILAR_TO]
    seen = {catalog.item_ids[i] for i in catalog.seen(catalog.user_index["42"])}
    assert SIMILAR_TO in seen  # so leaving the query out is not what leaves seen items out
    first, again = similar(graph, SIMILAR_TO, user_id="42"), similar(graph, SIMILAR_TO, user_id=42)
    assert answered(first) == answered(again)
    assert len(first["items"]) == 10
    assert set(answered(first)) <= set(catalog.item_ids)
    assert SIMILAR_TO not in answered(first)
    assert not seen & set(answered(first))
    assert all(i["title"] for i in first["items"])
    assert first["known_item"] is True
    assert first["stages"] == ["features", "similar", "rerank"]
    assert first["model_versions"] == {USER_TOWER: 1}
    # Whether this build has neighbours decides the fallback; the next test serves the other
    # case from a copy of the repository.
    anyone = similar(graph, SIMILAR_TO)
    if (directory / SIMILAR_FILE).is_file():
        assert first["fallbacks"] == []
        # The first pick has the highest score: a neighbour's, whatever MMR does next.
        assert catalog.item_index[answered(anyone)[0]] in neighbours_of(directory, query)
    else:
        assert first["fallbacks"] == ["similar:embeddings"]
    assert SIMILAR_TO not in answered(anyone)
    assert len(anyone["items"]) == 10

    for module, url in (
        (httpclient, graph.url.removeprefix("http://")),
        (grpcclient, graph.grpc_url),
    ):
        client = module.InferenceServerClient(url)
        try:
            assert client.is_model_ready("similar_items")
            metadata = client.get_model_metadata("similar_items")
            names = (
                [t["name"] for t in metadata["inputs"]]
                if isinstance(metadata, dict)
                else [t.name for t in metadata.inputs]
            )
            assert names == ["item_id", "k", "user_id"]
            item = module.InferInput("item_id", [1], "BYTES")
            item.set_data_from_numpy(np.array([SIMILAR_TO.encode()], dtype=object))
            k = module.InferInput("k", [1], "INT32")
            k.set_data_from_numpy(np.array([10], dtype=np.int32))
            user = module.InferInput("user_id", [1], "BYTES")
            user.set_data_from_numpy(np.array([b"42"], dtype=object))
            result = client.infer("similar_items", [item, k, user])
            got = [
                v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("item_ids")[0]
            ]
            assert got == answered(first)
            assert result.as_numpy("scores").shape == (1, 10)
            np.testing.assert_allclose(
                result.as_numpy("scores")[0], [i["score"] for i in first["items"]], rtol=1e-5
            )
        finally:
            client.close()


def test_similar_items_for_unknown_items_and_bad_requests(
    graph: GraphServer, catalog: Catalog
) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    unknown = similar(graph, "no-such-item", k=5)
    assert unknown["known_item"] is False
    assert unknown["stages"] == ["cold_start", "rerank"]
    pool = {catalog.item_ids[i] for i in catalog.popular_for({}, 50)}
    assert set(answered(unknown)) <= pool
    for body, field in (
        ({"k": 5}, "item_id: required"),
        ({"item_id": "50", "k": 0}, "k: 0 is outside"),
        ({"item_id": True}, "item_id: expected a string or an integer"),
        ({"item_id": "50", "user_id": ""}, "user_id: must not be empty"),
        ({"item_id": "50", "context": {}}, "context: unknown field"),
    ):
        status, answer, _ = post(f"{graph.url}/v1/similar", body)
        assert (status, set(answer)) == (400, {"error"}), answer
        assert field in answer["error"]
    status, answer, _ = post(f"{graph.url}/v2/models/similar_items/infer", OIP_ONE_USER)
    assert status == 400
    assert "missing required input 'item_id'" in answer["error"]
    status, config = get(f"{graph.url}/v2/models/similar_items/config")
    assert [i["name"] for i in config["input"]] == ["item_id", "k", "user_id"]
    assert get(f"{graph.url}/v2/models/similar_items/versions/7")[0] == 404
    client = grpcclient.InferenceServerClient(graph.grpc_url)
    try:
        item = grpcclient.InferInput("item_id", [1], "BYTES")
        item.set_data_from_numpy(np.array([b"50"], dtype=object))
        k = grpcclient.InferInput("k", [1], "INT32")
        k.set_data_from_numpy(np.array([0], dtype=np.int32))
        with pytest.raises(InferenceServerException) as error:
            client.infer("similar_items", [item, k])
        assert "INVALID_ARGUMENT" in str(error.value.status())
        assert "k" in error.value.message()
    finally:
        client.close()


def test_similar_items_follow_the_versions_neighbours_file(
    graph: GraphServer, redeploy: Any, catalog: Catalog, movielens_repo: Path, tmp_path: Path
) -> None:
    """The case the session's build does not show: a copy of the repository whose user tower
    version gains hand-made neighbours (or loses the build's). Re-rank by score only
    (``mmr_lambda`` 1), so the order is the rule's."""
    from scipy import sparse

    copy = tmp_path / "model_repo"
    shutil.copytree(movielens_repo, copy)
    directory = ModelRepository(copy).version_dir(USER_TOWER, 1)
    had_neighbours = (directory / SIMILAR_FILE).is_file()
    n = catalog.n_items
    query = catalog.item_index[SIMILAR_TO]
    weights = {(query + 1) % n: 0.9, (query + 7) % n: 0.6, (query + 13) % n: 0.3}
    if had_neighbours:
        (directory / SIMILAR_FILE).unlink()
    else:
        rows = np.repeat(np.arange(n), 3)
        cols = np.concatenate([[(i + 1) % n, (i + 7) % n, (i + 13) % n] for i in range(n)])
        data = np.tile(np.array([0.9, 0.6, 0.3], dtype=np.float32), n)
        sparse.save_npz(directory / SIMILAR_FILE, sparse.csr_matrix((data, (rows, cols)), (n, n)))
    redeploy(graph=RELAXED.with_overrides({"rerank": {"mmr_lambda": 1.0}}), repository=copy)
    answer = similar(graph, SIMILAR_TO)
    items = [catalog.item_index[i] for i in answered(answer)]
    assert len(items) == 10
    assert query not in items
    if had_neighbours:
        assert answer["fallbacks"] == ["similar:embeddings"]
        # Scores are the embeddings' cosines, best first, and nothing left out beats them.
        embeddings = np.load(directory / "item_embeddings.npy")
        cosine = embeddings @ embeddings[query]
        scores = [i["score"] for i in answer["items"]]
        np.testing.assert_allclose(scores, cosine[items], atol=1e-5)
        assert scores == sorted(scores, reverse=True)
        rest = np.delete(cosine, [query, *items])
        assert rest.max() <= min(scores) + 1e-5
    else:
        assert answer["fallbacks"] == []
        assert items[:3] == list(weights)  # neighbours first, heaviest first
        seen = set(catalog.seen(catalog.user_index["42"]).tolist())
        for_42 = [catalog.item_index[i] for i in answered(similar(graph, SIMILAR_TO, user_id="42"))]
        assert not seen & set(for_42)
        assert [i for i in for_42 if i in weights] == [i for i in weights if i not in seen]
