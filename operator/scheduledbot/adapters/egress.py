"""Outbound HTTP to URLs that tenants supply (notification sinks, calendar feeds), without becoming their proxy.

The threat
==========
The operator runs inside the cluster, next to the API server, the cloud's
metadata service (169.254.169.254) and every Service. A URL in a ScheduledBot is
written by whoever may create one, so a naive client would let them make the
operator POST to, or read from, anything it can reach (SSRF).

The policy
==========
- https only; http, and any address at all, only for hosts the administrator
  admitted (`EgressPolicy.admitted_hosts`, e.g. `--extra-notify-hosts`), as
  `host` or `host:port`.
- Otherwise every address the host resolves to must be public: no loopback,
  link-local (the metadata service), private (RFC 1918, ULA), shared (CGNAT),
  multicast, unspecified, reserved or documentation ranges, nor an IPv4 address
  of those kinds wrapped in IPv6 (IPv4-mapped, 6to4, Teredo, NAT64), nor the
  administrator's extra `denied_networks` (a cluster on public ranges). One bad
  address refuses the host.
- A host name must have a dot, and is resolved as an absolute name: a
  single-label name (`localhost`, `my-service`) and the resolver's search list
  (`.<ns>.svc.cluster.local`) are how cluster-internal names are reached.

No window for DNS rebinding
===========================
The check is made inside the connector's resolver, on the very addresses the
connection then uses; nothing resolves the name a second time (no DNS cache, no
proxy from the environment). TLS still verifies the certificate against the
host name. IP literals, which aiohttp does not resolve, are checked before the
request.

Bounded and quiet
=================
Connect and total timeouts; at most `max_body_bytes` of an answer are read (the
rest is left unread, and the connection closed); redirects are never followed (a
3xx is returned as it is: a sink that moved must be reconfigured, as Standard
Webhooks recommend); no decompression. A tenant's URL may carry a token in its
user info, path or query, so messages name only `scheme://host:port`
(`redact`), and errors are rebuilt here rather than passed on from aiohttp,
whose messages may quote the whole URL. No cookies are kept: requests for
different tenants share the client.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: NAT64 prefixes (RFC 6052 well-known, RFC 8215 local use): the last 32 bits are an IPv4 address.
_NAT64: Final = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
#: Whitespace, control characters and backslashes: parsers disagree about URLs that hold them.
_UNSAFE: Final = re.compile(r"[\s\x00-\x1f\x7f\\]")
DEFAULT_TIMEOUT_SECONDS: Final = 15.0
DEFAULT_CONNECT_TIMEOUT_SECONDS: Final = 5.0


class EgressRefused(OSError):
    """The policy refused the URL or an address its host resolves to; nothing was sent.

    An OSError so that aiohttp's connector, which wraps resolver errors, carries it through.
    """


class EgressError(Exception):
    """No HTTP answer: the host did not resolve, the connection or TLS failed, or time ran out."""


@dataclass(frozen=True, slots=True)
class EgressResponse:
    status: int
    #: Lower-case names; a repeated header keeps its last value.
    headers: Mapping[str, str]
    #: At most the `max_body_bytes` asked for.
    body: bytes
    #: The answer had more than `max_body_bytes`; the rest was not read.
    truncated: bool


def not_public(address: IPAddress, *, denied: Iterable[IPNetwork] = ()) -> str | None:
    """Why `address` must not be reached from the cluster on a tenant's behalf; None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded, how = _embedded_ipv4(address)
        if embedded is not None:
            why = not_public(embedded, denied=denied)
            return f"{why} ({how} {embedded})" if why else None
    for network in denied:
        if address.version == network.version and address in network:
            return f"in the denied network {network}"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4 of"
    if address.teredo is not None:
        return address.teredo[1], "Teredo to"
    if any(address in prefix for prefix in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64 of"
    return None, ""


def redact(url: str | URL) -> str:
    """`scheme://host:port` of `url`, plus `/…` if it has more: safe for logs, Events and status."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        host = parsed.raw_host
    except (ValueError, TypeError):
        return "(an unparsable URL)"
    if not parsed.scheme or not host:
        return "(a URL without scheme or host)"
    shown_host = f"[{host}]" if ":" in host else host
    port = f":{parsed.port}" if parsed.explicit_port is not None else ""
    more = "/…" if (parsed.raw_path not in ("", "/") or parsed.raw_query_string or parsed.raw_user) else ""
    return f"{parsed.scheme}://{shown_host}{port}{more}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressPolicy:
    """Which URLs a client may reach. The default admits only https to public addresses."""

    #: `host` or `host:port` (IPv6 in brackets), case-insensitive: an administrator's setting.
    admitted_hosts: frozenset[str] = frozenset()
    denied_networks: tuple[IPNetwork, ...] = ()

    def admits(self, host: str, port: int | None) -> bool:
        """Whether the administrator admitted `host` (on `port`): then http and any address are allowed."""
        host = host.lower().rstrip(".")
        bracketed = f"[{host}]" if ":" in host else host
        keys = {host, bracketed}
        if port is not None:
            keys |= {f"{host}:{port}", f"{bracketed}:{port}"}
        return not keys.isdisjoint(entry.lower() for entry in self.admitted_hosts)

    def check_url(self, url: str) -> URL:
        """`url` parsed, if this policy lets a request go there (addresses of names: see the resolver)."""
        if _UNSAFE.search(url):
            raise EgressRefused(f"{redact(url)}: the URL contains whitespace, control characters or a backslash")
        try:
            parsed = URL(url)
            host, port = parsed.host, parsed.port
        except (ValueError, TypeError):
            raise EgressRefused(f"{redact(url)}: not a valid URL") from None
        if parsed.scheme not in ("https", "http") or not host:
            raise EgressRefused(f"{redact(url)}: not an http(s) URL with a host")
        admitted = self.admits(host, port)
        if parsed.scheme != "https" and not admitted:
            raise EgressRefused(f"{redact(url)}: only https is allowed")
        if admitted:
            return parsed
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            if "." not in host.rstrip("."):
                raise EgressRefused(
                    f"{redact(url)}: {host} is not a fully qualified host name (single-label names are internal)"
                ) from None
            return parsed
        why = not_public(literal, denied=self.denied_networks)
        if why:
            raise EgressRefused(f"{redact(url)}: {literal} is {why}")
        return parsed


class GuardedResolver(AbstractResolver):
    """Resolves for the connector and refuses hosts with an address the policy forbids.

    The connection uses exactly the addresses returned here, which are the ones checked.
    """

    def __init__(self, policy: EgressPolicy, resolver: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._resolver = resolver or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._policy.admits(host, port):
            return await self._resolver.resolve(host, port, family)
        # Absolute: the search list must not turn a public-looking name into a cluster one.
        absolute = host if host.endswith(".") else f"{host}."
        results = await self._resolver.resolve(absolute, port, family)
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            why = not_public(address, denied=self._policy.denied_networks)
            if why:
                raise EgressRefused(f"{host} resolves to {address}, which is {why}")
        return [{**result, "hostname": host} for result in results]

    async def close(self) -> None:
        await self._resolver.close()


class EgressClient:
    """One aiohttp session that only goes where its policy allows. Create it inside the event loop."""

    def __init__(
        self,
        *,
        policy: EgressPolicy,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        max_connections: int = 100,
        user_agent: str = "scheduledbot-operator",
        ssl_context: ssl.SSLContext | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._policy = policy
        self._timeout = timeout_seconds
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(policy, resolver),
            use_dns_cache=False,
            limit=max_connections,
            ssl=ssl_context if ssl_context is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=connect_timeout_seconds),
            auto_decompress=False,
            trust_env=False,
            # One tenant's sink must not hand cookies to the next request to that host, another tenant's.
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        )

    @property
    def policy(self) -> EgressPolicy:
        return self._policy

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> EgressClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        max_body_bytes: int,
    ) -> EgressResponse:
        """Send one request and read at most `max_body_bytes` of the answer; redirects are returned, not followed.

        Raises `EgressRefused` (nothing sent) or `EgressError` (no answer); their
        messages name the URL only by `redact`.
        """
        target = self._policy.check_url(url)
        where = redact(target)
        try:
            async with self._session.request(
                method, target, headers=dict(headers or {}), data=body, allow_redirects=False
            ) as response:
                data, truncated = await _read_capped(response.content, max_body_bytes)
                answer = {name.lower(): value for name, value in response.headers.items()}
                return EgressResponse(status=response.status, headers=answer, body=data, truncated=truncated)
        except EgressRefused:
            raise
        except aiohttp.ClientConnectorDNSError as error:
            if isinstance(error.os_error, EgressRefused):
                raise EgressRefused(f"{where}: {error.os_error}") from None
            raise EgressError(f"{where}: the host name does not resolve") from None
        except aiohttp.ClientConnectorCertificateError:
            raise EgressError(f"{where}: the server's TLS certificate is not valid for its host") from None
        except aiohttp.ClientConnectorError as error:
            reason = error.os_error.strerror or type(error.os_error).__name__
            raise EgressError(f"{where}: cannot connect: {reason}") from None
        except TimeoutError:
            raise EgressError(f"{where}: no answer within {self._timeout:g} s") from None
        except aiohttp.ClientError as error:
            raise EgressError(f"{where}: {type(error).__name__}") from None


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:limit], True
