"""The Kubernetes adapter reads failures the way a real API server writes them.

A real kube-apiserver answers a discovery request for an API group nobody installed with a
plain-text ``404 page not found``, not a JSON ``Status``; these tests serve exactly that over
loopback HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from operators.k8s.client import Kube, KubeError, NotFound, Resource


def _plain_404() -> web.Response:
    return web.Response(status=404, text="404 page not found\n", content_type="text/plain")


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
         "message": message, "code": code},
        status=code,
    )  # fmt: skip


async def _discovery(request: web.Request) -> web.Response:
    group = request.match_info["group"]
    if group == "monitoring.coreos.com":
        return _plain_404()
    if group == "forbidden.example.com":
        return _status(403, "Forbidden", 'cannot get path "/apis/forbidden.example.com/v1"')
    if group == "proxy.example.com":
        return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")
    return web.json_response(
        {"kind": "APIResourceList", "groupVersion": f"{group}/v1",
         "resources": [{"name": "widgets", "namespaced": True, "kind": "Widget"}]}
    )  # fmt: skip


async def _object(request: web.Request) -> web.Response:
    if request.match_info["group"] == "monitoring.coreos.com":
        return _plain_404()
    name = request.match_info["name"]
    return _status(404, "NotFound", f'widgets.example.com "{name}" not found')


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[Kube]:
    app = web.Application()
    app.router.add_get("/apis/{group}/v1", _discovery)
    app.router.add_get("/apis/{group}/v1/namespaces/{ns}/{plural}/{name}", _object)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = Kube(f"http://127.0.0.1:{port}")
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_an_uninstalled_api_group_is_not_served(kube: Kube) -> None:
    assert await kube.serves("monitoring.coreos.com/v1", "servicemonitors") is False
    assert await kube.serves("example.com/v1", "widgets") is True
    assert await kube.serves("example.com/v1", "gadgets") is False


@pytest.mark.asyncio
async def test_a_plain_text_404_is_not_found_with_its_text(kube: Kube) -> None:
    monitors = Resource("monitoring.coreos.com/v1", "servicemonitors")
    with pytest.raises(NotFound) as caught:
        await kube._call("GET", monitors.path("ns", "m"))
    assert caught.value.reason == "NotFound"
    assert "404 page not found" in caught.value.message
    assert await kube.get(monitors, "ns", "m") is None


@pytest.mark.asyncio
async def test_a_status_keeps_the_servers_reason_and_message(kube: Kube) -> None:
    widgets = Resource("example.com/v1", "widgets")
    with pytest.raises(NotFound) as caught:
        await kube._call("GET", widgets.path("ns", "w"))
    assert caught.value.message.endswith('widgets.example.com "w" not found')


@pytest.mark.asyncio
async def test_other_discovery_failures_are_errors_not_a_missing_api(kube: Kube) -> None:
    with pytest.raises(KubeError) as forbidden:
        await kube.serves("forbidden.example.com/v1", "widgets")
    assert (forbidden.value.status, forbidden.value.reason) == (403, "Forbidden")
    with pytest.raises(KubeError) as proxied:
        await kube.serves("proxy.example.com/v1", "widgets")
    assert proxied.value.status == 502
    assert "bad gateway" in proxied.value.message
