"""One-layer OCI image archives made from a directory, for the real node's containerd (`ctr
images import`): no registry and no image builder needed. Deterministic: the same files give
the same digests, so an image that did not change is not imported again."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def oci_image(name: str, rootfs: Path, config: dict[str, Any], architecture: str, out: Path) -> str:
    """Write the image `name` (e.g. localhost/x:1) of directory `rootfs` with image `config`
    (the "config" field of its configuration: Entrypoint, Env...) to the archive `out`, and
    return its manifest digest (also written to `out`.digest)."""
    blobs: dict[str, bytes] = {}

    def blob(content: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(content).hexdigest()
        blobs[digest] = content
        return {"digest": f"sha256:{digest}", "size": len(content)}

    layer = blob(layer_tar(rootfs))
    image_config = {
        "architecture": architecture,
        "os": "linux",
        "config": config,
        # Uncompressed: the layer's digest is its diff ID.
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **blob(_json(image_config)),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
    }
    manifest_ref = blob(_json(manifest))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MANIFEST,
                **manifest_ref,
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                },
            }
        ],
    }
    files = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": _json(index),
        **{f"blobs/sha256/{digest}": content for digest, content in sorted(blobs.items())},
    }
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as archive:
        for path, content in files.items():
            archive.addfile(_entry(path, len(content)), io.BytesIO(content))
    digest: str = manifest_ref["digest"]
    Path(f"{out}.digest").write_text(digest + "\n")
    return digest


def layer_tar(rootfs: Path) -> bytes:
    """`rootfs` as a tar, entries sorted by name, owned by root, dated 0."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in [rootfs, *sorted(rootfs.rglob("*"))]:
            relative = path.relative_to(rootfs).as_posix()
            info = tar.gettarinfo(path, arcname="." if relative == "." else f"./{relative}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isreg():
                with path.open("rb") as content:
                    tar.addfile(info, content)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _entry(path: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size, info.mode = size, 0o644
    return info
