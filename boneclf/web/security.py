"""Who may use the server: anyone on this machine when it binds to loopback; with a token, only those
who present it.

The token comes as `Authorization: Bearer T` (programs) or `?token=T` (a link for people); the
first accepted `?token=` sets a cookie so that the page's images and forms load without it. Forms
that write (reviews) are refused when the browser says they come from another site, and no page
may be framed by another (a click inside a framed page would come from this site).
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "bonedb_token"
ENV_TOKEN = "BONEDB_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def presented_token(request: Request) -> tuple[str | None, bool]:
    """(the token the request carries, whether it came in the query string)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), False
    if "token" in request.query_params:
        return request.query_params["token"], True
    return request.cookies.get(COOKIE), False


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def served_hosts(host: str, also: tuple[str, ...] = ()) -> frozenset[str] | None:
    """The host names a server listening on HOST answers: on loopback, loopback's names, HOST and ALSO (the
    name a reverse proxy forwards with its Host header kept); elsewhere (a token is needed) any."""
    return LOOPBACK_NAMES | {host, *also} if is_loopback(host) else None


class TokenGuard(BaseHTTPMiddleware):
    """Every request needs the token (when one is set); unsafe methods also need to come from this site.

    `hosts`: the host names requests may address (the Host header). A server on loopback accepts only
    loopback names, so that a web page whose domain is made to resolve to 127.0.0.1 (DNS rebinding)
    cannot read it from a visitor's browser.
    """

    def __init__(self, app, token: str | None, hosts: frozenset[str] | None = None):
        super().__init__(app)
        self.token = token
        self.hosts = hosts

    async def dispatch(self, request: Request, call_next):
        if self.hosts is not None and (request.url.hostname or "").strip("[]") not in self.hosts:
            return _refuse(403, f"host {request.url.hostname!r} is not served here: use http://127.0.0.1 or localhost")
        from_query = False
        if self.token is not None:
            given, from_query = presented_token(request)
            if given is None:
                return _refuse(401, "this server needs a token: send `Authorization: Bearer TOKEN` or open the "
                                    "page once with ?token=TOKEN")
            if not _same(given, self.token):
                return _refuse(403, "wrong token")
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            return _refuse(403, "cross-site request refused: record reviews from bonedb's own pages")
        response = await call_next(request)
        if from_query:
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        return response


def _same_origin(request: Request) -> bool:
    """A browser names the page a form was sent from (Origin, else Referer); it must be this server.
    Programs send neither and are let through (with a token, they had to present it)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers={"WWW-Authenticate": "Bearer"}
                        if status == 401 else None)


# The pages load scripts, styles and pictures from this server only, have no inline script or style,
# and may not be framed; forms post here only.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SecurityHeaders:
    """Every response gets HEADERS; a route that sets a stricter or different policy keeps its own."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
