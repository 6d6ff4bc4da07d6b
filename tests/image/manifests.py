"""The Kubernetes manifests of deploy/kubernetes, loaded for the tests, and lookups in them."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def load_documents() -> list[dict]:
    """Return every non-empty YAML document of the manifests, in file order."""
    documents = []
    for path in MANIFESTS:
        documents.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
    return documents


DOCUMENTS = load_documents()
WORKLOADS = [document for document in DOCUMENTS if document["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]


def find(kind: str, name: str) -> dict:
    matches = [document for document in DOCUMENTS if document["kind"] == kind and document["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def document_id(document: dict) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"


def container(workload: dict, name: str) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return next(item for item in containers if item["name"] == name)
