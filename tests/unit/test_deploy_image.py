"""The image deploy/deployment.yaml runs is the one this repository builds (issue 14 item 6): the name the
compose stack builds from compose/Dockerfile, under `localhost/` (no public registry can serve it), never
pulled, and docs/kubernetes.md shows how to build it and load it into a cluster under that very name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _deployment_container() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "deploy" / "deployment.yaml").read_text())
    container: dict[str, Any] = document["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_deployment_runs_the_image_compose_builds() -> None:
    container = _deployment_container()
    compose = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    built = {s["image"] for s in compose["services"].values() if s.get("build") and s.get("image")}
    assert container["image"] in built
    assert container["image"].startswith("localhost/")
    assert container["imagePullPolicy"] == "Never"


def test_the_docs_build_and_load_that_name() -> None:
    image = _deployment_container()["image"]
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    assert f"docker build -f compose/Dockerfile -t {image} ." in docs
    assert f"kind load docker-image {image}" in docs
    assert f"minikube image load {image}" in docs
    assert f"-t {image} ." in (ROOT / "compose" / "Dockerfile").read_text()
