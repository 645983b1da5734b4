"""The log's archive on an object store: archived parquet files shipped to ``s3://`` and read
back from there, hash-checked.

A file of the local archive (`store.archive`) is sent whole to ``<archive_to>/<its name>``,
read back and hashed, and only once it matches is its marker ``remote-<first>-<last>.json``
(the object's URL and SHA-256) written durably beside the archive and the local file removed.
A crash between the two leaves both, which `store.archive.spans` counts once. A store that is
down leaves the file where it is (it stays readable) until the next shipment.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from store import objstore
from store.archive import ArchiveError, Span, spans, write_marker
from store.errors import ArtifactError
from store.fsutil import fsync_dir


def _store(url: str) -> objstore.S3Store:
    store = objstore.remote(url)
    if store is None:
        raise ArchiveError(f"archive: {url!r} is not an s3:// location")
    return store


def ship(span: Span, url: str) -> Span:
    """Move the archived file of ``span`` to the object store under ``url``."""
    store = _store(url)
    target = objstore.join(url, span.path.name)
    data = span.path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        store.put(target, data)
        if store.file_sha256(target) != sha:
            raise ArchiveError(f"archive: {target} does not read back as {span.path.name}")
    except ArtifactError as exc:
        raise ArchiveError(f"archive: cannot ship {span.path.name}: {exc}") from None
    directory = span.path.parent
    marker = directory / f"remote-{span.first:020d}-{span.last:020d}.json"
    body = {"url": target, "sha256": sha, "bytes": len(data), "first_seq": span.first,
            "last_seq": span.last}  # fmt: skip
    write_marker(marker, body)
    span.path.unlink()
    fsync_dir(directory)
    return Span(span.first, span.last, marker, False, target, sha)


def ship_all(directory: Path, url: str) -> list[Span]:
    """Ship every file the local archive still holds; the spans now on the object store."""
    return [ship(s, url) for s in spans(directory) if not s.url and not s.deleted]


def fetch(span: Span) -> pa.BufferReader:
    """The shipped file of ``span``, refused unless it hashes to what its marker recorded."""
    try:
        data = _store(span.url).get(span.url)
    except ArtifactError as exc:
        raise ArchiveError(f"archive: events {span.first}..{span.last}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != span.sha256:
        raise ArchiveError(f"archive: {span.url} does not hash to what {span.path} recorded")
    return pa.BufferReader(data)
