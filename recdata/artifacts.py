"""The versioned artifact directory: one folder per trained version, like a model repository.

<root>/LATEST                 name of the newest complete version
<root>/<version>/manifest.json version, data fingerprint, dims, metrics, files
<root>/<version>/items/       item id map + catalogue features (ItemTable)
<root>/<version>/users/       user histories (the demo's feature store)
<root>/<version>/retrieval/   two-tower weights, item embeddings, FAISS index
<root>/<version>/ranking/     ranker weights + feature schema
<root>/<version>/tagging/     tag model, vocabulary, precomputed catalogue tags
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

MANIFEST = "manifest.json"
LATEST = "LATEST"
FORMAT_VERSION = 1


class ArtifactError(RuntimeError):
    """The artifact directory is missing, incomplete or from an incompatible version."""


class ArtifactNotFound(ArtifactError):
    """No such version (or no LATEST): nothing at the path, as opposed to a version that is
    there but cannot be served."""


def data_fingerprint(items: pd.DataFrame, interactions: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for frame in (items[["item_id"]], interactions[["user_id", "item_id", "timestamp"]]):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def resolve(path: str | Path) -> Path:
    """A version directory, given either itself or the root holding LATEST."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    latest = path / LATEST
    if not latest.is_file():
        raise ArtifactNotFound(
            f"no artifacts at {path}: expected {path / LATEST} or {path / MANIFEST}; "
            f"train first with `recserve train --artifacts {path}`"
        )
    version_dir = path / latest.read_text().strip()
    if not (version_dir / MANIFEST).is_file():
        raise ArtifactNotFound(f"{latest} names {version_dir.name}, which has no {MANIFEST}")
    return version_dir


def artifact_root(path: str | Path) -> Path:
    """The root holding LATEST, given the root or one of its version directories."""
    path = Path(path)
    return path.parent if (path / MANIFEST).is_file() else path


def resolve_version(path: str | Path, version: str | None) -> Path:
    """`version` under the artifact root; with no version, `path` itself when it is a
    version directory, else what the root's LATEST names."""
    path = Path(path)
    if not version:
        return resolve(path)
    if "/" in version or version in {".", ".."}:
        raise ArtifactError(f"version must be a directory name, got {version!r}")
    root = artifact_root(path)
    version_dir = root / version
    try:
        present = (version_dir / MANIFEST).is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ArtifactNotFound(f"no artifact version {version!r} under {root} ({exc})") from exc
    if not present:
        raise ArtifactNotFound(f"no artifact version {version!r} under {root}")
    return version_dir


def latest_version(path: str | Path) -> str:
    """The version name LATEST points at, under the root of `path`."""
    return resolve(artifact_root(path)).name


def read_manifest(version_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((version_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{version_dir / MANIFEST} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("version"), str):
        raise ArtifactError(f"{version_dir / MANIFEST} is not a manifest (no version name)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{version_dir} has artifact format {manifest.get('format_version')}, "
            f"this build reads {FORMAT_VERSION}"
        )
    return manifest


def require_component(version_dir: Path, manifest: dict[str, Any], component: str) -> None:
    """A catalogue-only data set yields a tagging-only version; say so instead of crashing."""
    components = manifest.get("components", [])
    if component not in components:
        raise ArtifactError(
            f"artifact version {manifest.get('version')} at {version_dir} has no {component} "
            f"model (it holds {', '.join(components) or 'nothing'}; dataset "
            f"{manifest.get('dataset')!r}); train on a data set with interactions"
        )


def write_manifest(version_dir: Path, manifest: dict[str, Any]) -> None:
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    tmp = version_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, version_dir / MANIFEST)


def publish(root: Path, version: str) -> None:
    """Point LATEST at a complete version (atomic rename: readers never see a partial one)."""
    tmp = root / (LATEST + ".tmp")
    tmp.write_text(version + "\n")
    os.replace(tmp, root / LATEST)
