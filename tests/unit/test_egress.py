"""The egress client: only https to public addresses unless admitted, checked on the addresses it connects to,
bounded, quiet about secrets. Every connection in these tests goes to a server on 127.0.0.1 that the test starts;
addresses beyond loopback appear only in checks that connect nowhere."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from localcluster import pki
from localcluster.net import free_port
from scheduledbot.adapters.egress import (
    EgressClient,
    EgressError,
    EgressPolicy,
    EgressRefused,
    GuardedResolver,
    not_public,
    redact,
)

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "not a public address"),
        ("224.0.0.1", "multicast"),
        ("233.252.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("2001:db8::1", "private"),
        ("::ffff:127.0.0.1", "loopback (IPv4-mapped 127.0.0.1)"),
        ("::ffff:169.254.169.254", "link-local (IPv4-mapped 169.254.169.254)"),
        ("::ffff:8.8.8.8", None),
        ("2002:a00:1::", "private (6to4 of 10.0.0.1)"),
        ("64:ff9b::a00:1", "private (NAT64 of 10.0.0.1)"),
        ("64:ff9b::808:808", None),
        ("64:ff9b:1::7f00:1", "loopback (NAT64 of 127.0.0.1)"),
    ],
)
def test_only_public_addresses_may_be_reached(address: str, why: str | None) -> None:
    assert not_public(ipaddress.ip_address(address)) == why


def test_an_administrator_may_deny_more_networks() -> None:
    denied = (ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:4860::/32"))
    assert not_public(ipaddress.ip_address("203.0.113.9"), denied=denied) == "in the denied network 203.0.113.0/24"
    assert not_public(ipaddress.ip_address("2001:4860::8888"), denied=denied) is not None
    assert not_public(ipaddress.ip_address("8.8.8.8"), denied=denied) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com", "https://hooks.example.com"),
        ("https://hooks.example.com/", "https://hooks.example.com"),
        ("https://hooks.example.com:8443/services/T0/B0/XXXX", "https://hooks.example.com:8443/…"),
        ("https://hooks.example.com/?token=s3cret", "https://hooks.example.com/…"),
        ("https://user:pa55@hooks.example.com", "https://hooks.example.com/…"),
        ("http://[::1]:80/x", "http://[::1]:80/…"),
        ("not a url", "(a URL without scheme or host)"),
    ],
)
def test_urls_are_shown_by_their_origin_only(url: str, shown: str) -> None:
    assert redact(url) == shown


ADMITTED = EgressPolicy(admitted_hosts=frozenset({"127.0.0.1:8080", "receiver.test", "[::1]"}))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example.com/x", "only https is allowed"),
        ("ftp://hooks.example.com/x", "not an http(s) URL"),
        ("https:///x", "not an http(s) URL with a host"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("https://hooks.example.com\\@10.0.0.1/", "backslash"),
        ("https://localhost/x", "localhost is not a fully qualified host name"),
        ("https://my-service:8080/x", "not a fully qualified host name"),
        ("https://127.0.0.1/x", "127.0.0.1 is loopback"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is link-local"),
        ("https://[::ffff:10.1.2.3]/x", "private (IPv4-mapped 10.1.2.3)"),
        ("https://[fe80::1]/x", "is link-local"),
        ("http://127.0.0.1:8081/x", "only https is allowed"),  # admitted on 8080 only
    ],
)
def test_a_url_is_refused_before_anything_is_sent(url: str, problem: str) -> None:
    with pytest.raises(EgressRefused, match=problem.replace("(", r"\(").replace(")", r"\)")):
        ADMITTED.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x?token=1",
        "https://8.8.8.8/x",
        "http://127.0.0.1:8080/x",
        "http://RECEIVER.test:9999/x",
        "http://[::1]:7000/x",
    ],
)
def test_https_to_a_public_host_or_anything_admitted_passes_the_url_check(url: str) -> None:
    assert str(ADMITTED.check_url(url)) == url.replace("RECEIVER", "receiver")


class FakeDns(AbstractResolver):
    """Answers from a table; remembers the names it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        addresses = self.table.get(host)
        if addresses is None:
            raise OSError(socket.EAI_NONAME, "Name or service not known")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        pass


async def test_the_resolver_refuses_a_host_if_any_of_its_addresses_is_internal() -> None:
    dns = FakeDns({"mixed.example.com.": ["93.184.216.34", "10.0.0.7"], "public.example.com.": ["93.184.216.34"]})
    resolver = GuardedResolver(EgressPolicy(), dns)
    with pytest.raises(EgressRefused, match=r"mixed\.example\.com resolves to 10\.0\.0\.7, which is private"):
        await resolver.resolve("mixed.example.com", 443)
    [result] = await resolver.resolve("public.example.com", 443)
    # Resolved as an absolute name (no search list), and connected to the checked address under the asked name.
    assert (result["host"], result["hostname"]) == ("93.184.216.34", "public.example.com")
    assert dns.asked == ["mixed.example.com.", "public.example.com."]


async def test_the_resolver_leaves_admitted_hosts_alone() -> None:
    dns = FakeDns({"receiver.test": ["127.0.0.1"]})
    resolver = GuardedResolver(ADMITTED, dns)
    [result] = await resolver.resolve("receiver.test", 9000)
    assert result["host"] == "127.0.0.1" and dns.asked == ["receiver.test"]


# -- against local servers -------------------------------------------------------------------------------------


class Local:
    """A local HTTP(S) server that counts the connections and requests it gets."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[str] = []
        self.cookies: list[str | None] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        await self.runner.setup()
        assert self.runner.server is not None
        handler = self.runner.server

        def factory() -> asyncio.Protocol:
            self.connections += 1
            return handler()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        self.cookies.append(request.headers.get("Cookie"))
        path = request.path
        if path == "/cookie":
            response = web.Response(text="hello")
            response.set_cookie("session", "tenant-a")
            return response
        if path == "/redirect":
            raise web.HTTPFound("/ok")
        if path == "/big":
            return web.Response(body=b"x" * 1_000_000)
        if path == "/hang":
            await asyncio.sleep(30)
        return web.Response(text="hello")


@pytest.fixture
async def local() -> AsyncIterator[Local]:
    server = Local()
    await server.start()
    yield server
    await server.stop()


def _client(server: Local, *, timeout_seconds: float = 15.0) -> EgressClient:
    policy = EgressPolicy(admitted_hosts=frozenset({f"127.0.0.1:{server.port}"}))
    return EgressClient(policy=policy, timeout_seconds=timeout_seconds)


async def test_an_admitted_local_host_is_reached_over_http(local: Local) -> None:
    async with _client(local) as client:
        answer = await client.request("POST", f"http://127.0.0.1:{local.port}/hook", body=b"{}", max_body_bytes=100)
    assert (answer.status, answer.body, answer.truncated) == (200, b"hello", False)
    assert answer.headers["content-type"].startswith("text/plain")
    assert local.requests == ["/hook"]


async def test_without_admission_loopback_is_refused_and_nothing_connects(local: Local) -> None:
    async with EgressClient(policy=EgressPolicy()) as client:
        for url in (
            f"http://127.0.0.1:{local.port}/hook",
            f"https://127.0.0.1:{local.port}/hook",
            f"https://[::ffff:127.0.0.1]:{local.port}/hook",
            f"https://localhost:{local.port}/hook",
        ):
            with pytest.raises(EgressRefused):
                await client.request("POST", url, max_body_bytes=100)
    assert local.connections == 0


async def test_a_name_that_resolves_to_loopback_is_refused_and_nothing_connects(local: Local) -> None:
    dns = FakeDns({"sink.example.com.": ["127.0.0.1"]})
    async with EgressClient(policy=EgressPolicy(), resolver=dns) as client:
        with pytest.raises(EgressRefused) as refused:
            await client.request("POST", f"https://sink.example.com:{local.port}/h?token=s3cret", max_body_bytes=100)
    assert str(refused.value) == (
        f"https://sink.example.com:{local.port}/…: sink.example.com resolves to 127.0.0.1, which is loopback"
    )
    assert local.connections == 0


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context whose certificate names kubernetes.default.svc and a client context trusting its CA."""
    files = pki.generate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.apiserver_cert, files.apiserver_key)
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    return server, client


async def test_tls_is_verified_against_the_name_while_connecting_to_the_checked_address(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls
    server = Local()
    await server.start(server_context)
    try:
        dns = FakeDns({"kubernetes.default.svc": ["127.0.0.1"], "sink.test": ["127.0.0.1"]})
        policy = EgressPolicy(admitted_hosts=frozenset({"kubernetes.default.svc", "sink.test"}))
        async with EgressClient(policy=policy, resolver=dns, ssl_context=client_context) as client:
            url = f"https://kubernetes.default.svc:{server.port}/ok"
            assert (await client.request("GET", url, max_body_bytes=100)).status == 200
            with pytest.raises(EgressError, match="TLS certificate is not valid"):
                await client.request("GET", f"https://sink.test:{server.port}/ok", max_body_bytes=100)
    finally:
        await server.stop()


async def test_a_redirect_is_returned_not_followed(local: Local) -> None:
    async with _client(local) as client:
        answer = await client.request("POST", f"http://127.0.0.1:{local.port}/redirect", max_body_bytes=100)
    assert answer.status == 302 and answer.headers["location"] == "/ok"
    assert local.requests == ["/redirect"]


async def test_no_cookie_set_by_one_sink_is_sent_to_the_next(local: Local) -> None:
    # A host name, not an IP: cookie jars keep no cookies for IP addresses anyway.
    policy = EgressPolicy(admitted_hosts=frozenset({f"hooks.test:{local.port}"}))
    async with EgressClient(policy=policy, resolver=FakeDns({"hooks.test": ["127.0.0.1"]})) as client:
        await client.request("POST", f"http://hooks.test:{local.port}/cookie", max_body_bytes=100)
        await client.request("POST", f"http://hooks.test:{local.port}/other-tenant", max_body_bytes=100)
    assert local.cookies == [None, None]


async def test_at_most_the_cap_is_read(local: Local) -> None:
    async with _client(local) as client:
        big = await client.request("GET", f"http://127.0.0.1:{local.port}/big", max_body_bytes=1000)
        exact = await client.request("GET", f"http://127.0.0.1:{local.port}/ok", max_body_bytes=5)
    assert (big.status, len(big.body), big.truncated) == (200, 1000, True)
    assert (exact.body, exact.truncated) == (b"hello", False)


async def test_a_server_that_never_answers_times_out(local: Local) -> None:
    async with _client(local, timeout_seconds=0.3) as client:
        with pytest.raises(EgressError, match=r"no answer within 0\.3 s"):
            await client.request("POST", f"http://127.0.0.1:{local.port}/hang", max_body_bytes=100)


async def test_a_closed_port_is_an_error_that_shows_no_secret() -> None:
    port = free_port()  # nothing listens there
    policy = EgressPolicy(admitted_hosts=frozenset({f"127.0.0.1:{port}"}))
    async with EgressClient(policy=policy) as client:
        with pytest.raises(EgressError) as failed:
            await client.request("POST", f"http://alice:pa55@127.0.0.1:{port}/h?token=s3cret", max_body_bytes=100)
    message = str(failed.value)
    assert message.startswith(f"http://127.0.0.1:{port}/…: cannot connect")
    for secret in ("alice", "pa55", "s3cret", "token"):
        assert secret not in message
