"""The web console in a real headless browser (issue 14 item 1, docs/console.md): a control plane process,
a real Envoy and real upstreams; Debian's chromium loads the page from the admin port and its own script
fills the DOM. A NACK provoked on the real Envoy (a listener on a port a socket holds) shows in the page."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import UpstreamPool, wait_until
from harness.browser import dump_dom, elements, screenshot

from .stack import start_stack

# Regenerates docs/console.png (the README's screenshot) from this test's run when set to 1.
UPDATE_PNG = os.environ.get("XDS_UPDATE_CONSOLE_PNG") == "1"
DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "console.png"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port a plain socket holds, so Envoy's bind of it fails and it NACKs the listener."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        yield blocker.getsockname()[1]
    finally:
        blocker.close()


def _states_in_row(html: str, node: str) -> list[str]:
    # The row's cells, in column order (CDS EDS SDS LDS RDS): the spans' classes carry the state.
    start = html.find(f'<tr data-node="{node}"')
    if start < 0:
        return []
    row = html[start:html.find("</tr>", start) + len("</tr>")]
    return [e.text for e in elements(row, tag="span", class_="state")]


def test_console_shows_synced_proxies_then_a_nack_within_seconds(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any, taken_port: int, tmp_path: Path) -> None:
    pool = upstreams("web-1", "api-1")
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("web-1", {})], "api": [("api-1", {})]},
                        backends=[("web", None, 80), ("api", None, 20)],
                        control_plane_factory=control_plane_factory, envoy_factory=envoy_factory)
    url = f"http://127.0.0.1:{stack.control_plane.admin_port}/"

    html = wait_until(lambda: (lambda h: h if _states_in_row(h, "envoy-1").count("SYNCED") == 4 else None)(
        dump_dom(url)), timeout_s=25, message="the console never showed envoy-1 SYNCED on CDS, EDS, LDS, RDS")
    assert _states_in_row(html, "envoy-1") == ["SYNCED", "SYNCED", "NOT SENT", "SYNCED", "SYNCED"]
    # The page polls: within the 2 s virtual-time budget its script fetched the state more than once.
    (body,) = elements(html, tag="body")
    assert int(body.attrs["data-polls"]) >= 2
    (row,) = elements(html, tag="tr", data_node="envoy-1")
    assert "edge" in row.text and "ADS" in row.text
    (source,) = elements(html, tag="tr", data_source=f"file:{stack.catalog.path}")
    assert "SYNCED" in source.text
    (group,) = elements(html, tag="tr", data_group="edge")
    assert "cds=" in group.text and "2 cds" in group.text
    (route,) = elements(html, tag="tr", data_route="all")
    assert "web 80" in route.text and "api 20" in route.text
    assert {e.attrs["data-resource"] for e in elements(html, tag="details")
            if "data-resource" in e.attrs} >= {"cds/web", "cds/api", "lds/ingress", "rds/ingress"}
    assert elements(html, tag="div", class_="nack") == []

    # Provoke a NACK: a second listener on a port a socket holds; Envoy cannot bind it and rejects LDS.
    stack.catalog.extra_listeners.append({
        "name": "blocked", "address": "127.0.0.1", "port": taken_port,
        "routes": [{"name": "b", "backends": [{"service": "web", "weight": 100}]}]})
    written = stack.catalog.write()

    def nack_shown() -> str | None:
        page = dump_dom(url)
        nacks = [e.text for e in elements(page, tag="div", class_="nack", data_node="envoy-1")]
        return page if any("Address already in use" in text and "LDS" in text for text in nacks) else None

    html = wait_until(nack_shown, timeout_s=20, message="the NACK never appeared in the console")
    elapsed = time.monotonic() - written
    print(f"\ncatalog write -> NACK text in the rendered console: {elapsed:.2f} s")
    assert elapsed < 15
    assert any("blocked" in e.text for e in elements(html, tag="div", id="quarantined"))
    history = " ".join(e.text for e in elements(html, tag="details") if "data-seq" in e.attrs)
    assert "lds/blocked" in history

    png = screenshot(url, tmp_path / "console.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    if UPDATE_PNG:
        shutil.copyfile(png, DOCS_PNG)
