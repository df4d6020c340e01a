"""The console's HTTP routes, added to the admin server's aiohttp application (docs/console.md).

    GET /                          the page (static HTML; its script polls the state endpoint)
    GET /console/static/{file}     the page's script and style sheet, committed to the repo (no build step)
    GET /console/api/state         proxies, sources, node groups, route splits, changes (JSON)
    GET /console/api/resources     ?group=NAME: the config that group receives, resource by resource

GET only: the console changes nothing (issue 14 item 1). It lives on the admin port, loopback by default
(docs/config.md, --admin-address), which has no authentication; everything it shows is redacted.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources as package_files

from aiohttp import web

from xds.console import view
from xds.console.view import ConsoleData

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
    def __init__(self, data: ConsoleData) -> None:
        self._data = data

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
        # Route splits parse each group's RouteConfigurations: a worker thread keeps xDS streams moving.
        return _json(await asyncio.to_thread(view.state, self._data))

    async def _resources(self, request: web.Request) -> web.Response:
        group = request.query.get("group", "")
        if not group:
            raise web.HTTPBadRequest(text="query parameter 'group' is required\n")
        document = await asyncio.to_thread(view.resources, self._data, group)
        if document is None:
            raise web.HTTPNotFound(text=f"no snapshot for node group {group!r}\n")
        return _json(document)
