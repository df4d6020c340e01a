"""The console's HTTP routes, added to the admin server's aiohttp application (docs/console.md).

    GET /                          the page (static HTML; its script polls the state endpoint)
    GET /console/static/{file}     the page's script and style sheet, committed to the repo (no build step)
    GET /console/api/state         proxies, sources, node groups, route splits, changes (JSON)
    GET /console/api/resources     ?group=NAME: the config that group receives, resource by resource

GET only: the console changes nothing (issue 14 item 1). It lives on the admin port, loopback by default
(--admin-address, 127.0.0.1:19005); everything it shows is redacted. The API shows what the management
API's GetSnapshot shows, so when the management API wants tokens (issue 9, docs/security.md) the console's
API wants one of the same tokens (read or admin) as `Authorization: Bearer`; the page asks for it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from importlib import resources as package_files

from aiohttp import web

from xds.console import view
from xds.console.view import ConsoleData
from xds.server.management_auth import bearer_token

# Given the bearer token a request presents (None: none), whether it may read the console's API.
Authorize = Callable[[str | None], bool]

STATIC_FILES = {"console.js": "text/javascript", "console.css": "text/css", "index.html": "text/html"}
# The page runs only its own script, loads nothing from elsewhere and may not be framed (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _static(name: str) -> bytes:
    return package_files.files("xds.console").joinpath("static", name).read_bytes()


def _json(document: object) -> web.Response:
    return web.Response(text=json.dumps(document, sort_keys=True), content_type="application/json",
                        headers=SECURITY_HEADERS)


class ConsoleRoutes:
    """The routes above over `data`; with `authorize`, the API answers 401 to a request it refuses."""

    def __init__(self, data: ConsoleData, *, authorize: Authorize | None = None) -> None:
        self._data = data
        self._authorize = authorize

    def _check(self, request: web.Request) -> None:
        if self._authorize is None:
            return
        header = request.headers.get("Authorization")
        token = bearer_token([("authorization", header)] if header else None)
        if not self._authorize(token):
            # The same tokens as the management API (docs/security.md); the value is never echoed.
            raise web.HTTPUnauthorized(
                text="the console API needs a management API token (read or admin): Authorization: Bearer\n",
                headers={"WWW-Authenticate": 'Bearer realm="xds-console"', **SECURITY_HEADERS})

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/console/static/{name}", self._file)
        app.router.add_get("/console/api/state", self._state)
        app.router.add_get("/console/api/resources", self._resources)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8",
                            headers=SECURITY_HEADERS)

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = STATIC_FILES.get(name)
        if kind is None:  # a fixed list: no path from the request ever reaches the file system
            raise web.HTTPNotFound(text=f"no console file {name!r}\n")
        return web.Response(body=_static(name), content_type=kind, charset="utf-8", headers=SECURITY_HEADERS)

    async def _state(self, request: web.Request) -> web.Response:
        self._check(request)
        # Route splits parse each group's RouteConfigurations: a worker thread keeps xDS streams moving.
        return _json(await asyncio.to_thread(view.state, self._data))

    async def _resources(self, request: web.Request) -> web.Response:
        self._check(request)
        group = request.query.get("group", "")
        if not group:
            raise web.HTTPBadRequest(text="query parameter 'group' is required\n")
        document = await asyncio.to_thread(view.resources, self._data, group)
        if document is None:
            raise web.HTTPNotFound(text=f"no snapshot for node group {group!r}\n")
        return _json(document)
