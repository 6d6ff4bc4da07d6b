"""The upstream registries: picking one for a request and forwarding requests to it unchanged."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mirrorproxy.oci import error_response

log = logging.getLogger(__name__)

# Request headers a registry needs to respond as it would respond to the client.
# Each is copied one by one, so repeated Accept headers stay separate: merged
# into one, distribution rejects OCI manifests.
FORWARDED_REQUEST_HEADERS = ("accept", "authorization", "range", "if-none-match", "user-agent")

# Hop-by-hop headers (RFC 9110, section 7.6.1) belong to one connection and are
# never copied to the other side.
HOP_BY_HOP_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
}

# Response headers that uvicorn sets itself; a copy would repeat them.
_SERVER_SET_HEADERS = {"date", "server"}


class UnknownUpstream(Exception):
    """A request named (with ?ns=) a registry the mirror has no upstream for."""


@dataclass(frozen=True)
class Upstream:
    """One upstream registry: the host clients call it by, and the base URL of its API."""

    registry: str
    base_url: str

    def url(self, path: str) -> str:
        """Return the upstream URL of a path below /v2/, e.g. `library/busybox/blobs/sha256:...`."""
        return f"{self.base_url}/v2/{path}"


class Upstreams:
    """The configured upstreams, picked by containerd's `?ns=` parameter or the default."""

    def __init__(self, urls: dict[str, str], default: str | None):
        self._by_registry = {registry: Upstream(registry, url) for registry, url in urls.items()}
        self._default = default

    def pick(self, namespace: str | None) -> Upstream:
        """Return the upstream for `?ns=namespace`, or the default one when it is absent."""
        registry = namespace or self._default
        if registry is None:
            raise UnknownUpstream("the mirror has no upstream registry; start it with --upstream REGISTRY=URL")
        upstream = self._by_registry.get(registry)
        if upstream is None:
            known = ", ".join(self._by_registry) or "none"
            raise UnknownUpstream(
                f"no upstream for registry {registry!r} (configured: {known}); add --upstream {registry}=URL"
            )
        return upstream


def forwarded_headers(request: Request, names: tuple[str, ...] = FORWARDED_REQUEST_HEADERS) -> list[tuple[str, str]]:
    """Return the client's headers to send upstream, each repeated header as its own entry."""
    headers = []
    for key, value in request.headers.raw:
        name = key.decode("latin-1").lower()
        if name in names:
            headers.append((name, value.decode("latin-1")))
    return headers


def credential_headers(request: Request) -> dict[str, str]:
    """Return the client's Authorization header, the one credential a registry reads."""
    authorization = request.headers.get("authorization")
    return {"Authorization": authorization} if authorization else {}


def copy_response_headers(upstream: httpx.Response, response: Response) -> None:
    """Put every end-to-end header of the upstream's response on `response`, repeated ones included."""
    headers = [
        (key.lower(), value)
        for key, value in upstream.headers.raw
        if key.decode("latin-1").lower() not in HOP_BY_HOP_HEADERS | _SERVER_SET_HEADERS
    ]
    response.raw_headers = headers


def unreachable_response(upstream: Upstream, error: httpx.HTTPError) -> Response:
    """Return the OCI error for an upstream that did not respond: 503 on a timeout, else 502."""
    log.warning("upstream request failed", extra={"upstream": upstream.registry, "error": repr(error)})
    if isinstance(error, httpx.TimeoutException):
        return error_response(
            503, "UNAVAILABLE", f"upstream registry {upstream.registry} timed out; retry later"
        )
    return error_response(
        502, "UNAVAILABLE", f"upstream registry {upstream.registry} cannot be reached: {type(error).__name__}"
    )


async def forward(
    client: httpx.AsyncClient,
    request: Request,
    upstream: Upstream,
    path: str,
) -> Response:
    """Send the client's GET or HEAD to the upstream and return its response unchanged.

    Status, headers and body come back as the upstream sent them; redirects are
    returned to the client, not followed. `?ns=` is dropped from the query.
    """
    params = [(key, value) for key, value in request.query_params.multi_items() if key != "ns"]
    upstream_request = client.build_request(
        request.method,
        upstream.url(path),
        params=params,
        headers=forwarded_headers(request),
    )
    try:
        reply = await client.send(upstream_request, stream=True, follow_redirects=False)
    except httpx.HTTPError as error:
        return unreachable_response(upstream, error)

    if request.method == "HEAD":
        await reply.aclose()
        response = Response(status_code=reply.status_code)
        copy_response_headers(reply, response)
        return response

    # The body passes through as raw bytes, so Content-Length and
    # Content-Encoding stay true to it.
    response = StreamingResponse(
        reply.aiter_raw(), status_code=reply.status_code, background=BackgroundTask(reply.aclose)
    )
    copy_response_headers(reply, response)
    return response
