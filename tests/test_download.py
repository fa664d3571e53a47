"""bot.download against a real aiohttp server on 127.0.0.1. "127.0.0.1" and "localhost" reach the same
server, so allowing only "127.0.0.1" turns "localhost" into a disallowed host we can watch for."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web

from bot.download import DownloadError, download_to_file, fetch_bytes, safe_url
from bot.errors import UserFacingError

ALLOWED = ["127.0.0.1"]


def payload(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


@dataclass
class Server:
    base: str
    port: int
    seen: list[tuple[str, str]] = field(default_factory=list)  # (Host header, path) of every request
    endless_done: asyncio.Event = field(default_factory=asyncio.Event)
    endless_sent: list[int] = field(default_factory=list)


@pytest.fixture
async def server():
    srv: Server | None = None

    @web.middleware
    async def record(request, handler):
        srv.seen.append((request.host, request.path))
        return await handler(request)

    async def file(request):
        return web.Response(body=payload(int(request.match_info["size"])), content_type="video/mp4")

    async def chunked(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        body = payload(int(request.match_info["size"]))
        for start in range(0, len(body), 10_000):
            await resp.write(body[start:start + 10_000])
        await resp.write_eof()
        return resp

    async def endless(request):
        # Streams until the client hangs up: a download that does not stop at its cap never finishes.
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        try:
            while True:
                await resp.write(b"\x00" * 65536)
                sent += 65536
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            srv.endless_sent.append(sent)
            srv.endless_done.set()
        return resp

    async def hop(request):
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=payload(1234))
        # Alternate relative and absolute Location headers, both on the allowed host.
        target = f"/hop/{n - 1}" if n % 2 else f"http://127.0.0.1:{srv.port}/hop/{n - 1}?sig=abc"
        raise web.HTTPFound(target)

    async def redirect(request):
        raise web.HTTPTemporaryRedirect(request.query["to"])

    async def status(request):
        return web.Response(status=int(request.match_info["code"]), text="nope")

    app = web.Application(middlewares=[record])
    app.add_routes([
        web.get("/file/{size}", file), web.get("/chunked/{size}", chunked), web.get("/endless", endless),
        web.get("/hop/{n}", hop), web.get("/redirect", redirect), web.get("/status/{code}", status),
    ])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv = Server(base=f"http://127.0.0.1:{port}", port=port)
    yield srv
    await runner.cleanup()


@pytest.fixture
async def client():
    # follow_redirects=True on purpose: the downloader must still check every hop itself.
    async with httpx.AsyncClient(trust_env=False, follow_redirects=True, timeout=30) as c:
        yield c


async def get(client, url, max_bytes=10_000_000, hosts=ALLOWED) -> bytes:
    return await fetch_bytes(client, url, allowed_hosts=hosts, max_bytes=max_bytes,
                             what="the first_frame image")


async def test_allowed_host_ok(server, client):
    assert await get(client, f"{server.base}/file/5000") == payload(5000)
    assert server.seen == [(f"127.0.0.1:{server.port}", "/file/5000")]


async def test_disallowed_host_refused_before_any_request(server, client):
    with pytest.raises(DownloadError) as info:
        await get(client, f"http://localhost:{server.port}/file/10?ex=1&hm=SECRET")
    err = info.value
    assert isinstance(err, UserFacingError) and err.reason == "host"
    assert "host 'localhost' is not allowed (allowed: 127.0.0.1)" in err.message
    assert "the first_frame image" in err.message
    assert "SECRET" not in err.message and f"http://localhost:{server.port}/file/10" in err.message
    assert server.seen == []


async def test_redirect_to_disallowed_host_refused(server, client):
    target = f"http://localhost:{server.port}/file/10"
    with pytest.raises(DownloadError) as info:
        await get(client, f"{server.base}/redirect?to={target}")
    assert info.value.reason == "host"
    assert f"Refused to follow a redirect to {target}" in info.value.message
    assert [host for host, _ in server.seen] == [f"127.0.0.1:{server.port}"]  # localhost never asked


async def test_redirect_to_plain_http_on_public_host_refused(server, client):
    target = "http://example.com/video.mp4"
    with pytest.raises(DownloadError) as info:
        await get(client, f"{server.base}/redirect?to={target}", hosts=["127.0.0.1", "example.com"])
    assert "only https is allowed" in info.value.message
    assert len(server.seen) == 1


async def test_redirect_chain_within_allowed_ok(server, client):
    assert await get(client, f"{server.base}/hop/5") == payload(1234)
    assert [path for _, path in server.seen] == [f"/hop/{n}" for n in range(5, -1, -1)]


async def test_too_many_redirects_refused(server, client):
    with pytest.raises(DownloadError) as info:
        await get(client, f"{server.base}/hop/6")
    assert info.value.reason == "redirects"
    assert "more than 5 redirects" in info.value.message
    assert len(server.seen) == 6  # the sixth redirect is not followed


async def test_content_length_over_cap_refused(server, client):
    with pytest.raises(DownloadError) as info:
        await get(client, f"{server.base}/file/2000", max_bytes=1000)
    assert info.value.reason == "too_large"
    assert "it is 2000 bytes, over the limit of 1000 bytes" in info.value.message


async def test_exactly_at_cap_ok_one_over_refused(server, client):
    assert await get(client, f"{server.base}/chunked/25000", max_bytes=25_000) == payload(25_000)
    with pytest.raises(DownloadError) as info:
        await get(client, f"{server.base}/chunked/25001", max_bytes=25_000)
    assert "more than 25000 bytes" in info.value.message


async def test_chunked_body_over_cap_aborted_and_no_file_left(server, client, tmp_path):
    dest = tmp_path / "out" / "video.mp4"
    with pytest.raises(DownloadError) as info:
        await download_to_file(client, f"{server.base}/endless", dest, allowed_hosts=ALLOWED,
                               max_bytes=3 * 1024 * 1024, what="the video")
    assert info.value.reason == "too_large"
    assert "the video" in info.value.message and "over the limit of 3.0 MB" in info.value.message
    await asyncio.wait_for(server.endless_done.wait(), 30)  # the server saw the client hang up
    assert list(dest.parent.iterdir()) == []


async def test_failed_download_keeps_existing_file(server, client, tmp_path):
    dest = tmp_path / "video.mp4"
    dest.write_bytes(b"previous")
    with pytest.raises(DownloadError):
        await download_to_file(client, f"{server.base}/chunked/5000", dest, allowed_hosts=ALLOWED,
                               max_bytes=4000, what="the video")
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]


async def test_download_to_file_ok(server, client, tmp_path):
    dest = tmp_path / "videos" / "job-1.mp4"
    size = 3 * 1024 * 1024 + 17  # crosses the write buffer several times
    n = await download_to_file(client, f"{server.base}/chunked/{size}", dest, allowed_hosts=ALLOWED,
                               max_bytes=10 * 1024 * 1024, what="the video")
    assert n == size
    assert dest.read_bytes() == payload(size)
    assert [p.name for p in dest.parent.iterdir()] == ["job-1.mp4"]


async def test_404_is_an_error_without_the_query(server, client, tmp_path):
    with pytest.raises(DownloadError) as info:
        await get(client, f"{server.base}/status/404?token=SECRET")
    err = info.value
    assert (err.reason, err.status) == ("status", 404)
    assert f"{server.base}/status/404: the server answered HTTP 404 Not Found." in err.message
    assert "SECRET" not in err.message
    dest = tmp_path / "v.mp4"
    with pytest.raises(DownloadError):
        await download_to_file(client, f"{server.base}/status/500", dest, allowed_hosts=ALLOWED,
                               max_bytes=1000, what="the video")
    assert list(tmp_path.iterdir()) == []


async def test_http_to_non_loopback_refused_without_connecting(server):
    # The loopback server stands in as the proxy for everything, so any request that left would show up.
    async with httpx.AsyncClient(trust_env=False, proxy=server.base) as proxied:
        with pytest.raises(DownloadError) as info:
            await fetch_bytes(proxied, "http://cdn.discordapp.com/attachments/1/2/a.png?ex=1&hm=SECRET",
                              allowed_hosts=["cdn.discordapp.com"], max_bytes=1000,
                              what="the first_frame image")
    assert "only https is allowed" in info.value.message
    assert "SECRET" not in info.value.message
    assert server.seen == []


async def test_connection_refused_is_a_download_error(client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening: connecting is refused
        port = sock.getsockname()[1]
        with pytest.raises(DownloadError) as info:
            await get(client, f"http://127.0.0.1:{port}/x?token=SECRET")
    assert info.value.reason == "network"
    assert "SECRET" not in info.value.message


def test_safe_url_drops_credentials_query_and_fragment():
    assert safe_url("https://u:p@cdn.example.com:8443/a/b.png?sig=1#f") == "https://cdn.example.com:8443/a/b.png"
    assert safe_url("http://[::1]:80/x") == "http://[::1]:80/x"
