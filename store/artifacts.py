"""Artifacts: a stage task's outputs on disk, written so that a crash never leaves half a file.

Every write goes to a temp file in the target's directory and is renamed into place, so a path
that exists holds a whole artifact. Final outputs (parquet) and the small byte artifacts
(partials, stats, reports) are fsynced before the rename and the directory after it (DESIGN
section 13). Frames between stages are Arrow IPC files, uncompressed and memory-mapped on read,
and are *not* synced (DESIGN section 5: an intermediate may be recomputed instead): each is
stamped with the machine's boot id, and a reader trusts a frame of this boot as it is (the
page cache holds what was written until the machine stops) but hashes one written before the
machine restarted and refuses it unless it matches what its producer recorded. Where no boot
id can be had, frames are synced like the rest. Each write returns the file's size and
SHA-256, which `StageCompleted` records and `verify` checks before an artifact is reused.

Two kinds of artifact stand for more than their own bytes, and every reader here takes them:
a *slice* (`store.slices`) is row groups of the execution's input, and a *delta*
(`store.deltas`) holds only the columns a stage added to the artifact it read, its base.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store import atomic, deltas
from store.deltas import Base
from store.errors import ArtifactError, ArtifactLostError
from store.fsutil import fsync_dir, make_private_dir
from store.objstore import is_remote, remote
from store.slices import (
    is_slice,
    read_slice,
    read_slice_schema,
    slice_bytes,
    slice_hash,
    uses_threads,
)
from store.smallframes import small_frame

SMALL: Final = 32 * 1024 * 1024  # frames up to this size are serialized and hashed in memory
IPC_MAGIC: Final = b"ARROW1"
BOOT_KEY: Final = b"porch.boot"  # a frame's schema metadata: the boot id of its writer
BOOT_ID_FILE: Final = Path("/proc/sys/kernel/random/boot_id")
_boot: list[str | None] = []  # this process's boot id, once read (or set)
_compress: list[bool] = [True]  # `set_compression`


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    path: str
    rows: int
    bytes: int
    sha256: str


def write_frame(
    path: str | Path,
    df: pd.DataFrame,
    *,
    base: Base | None = None,
    durable: bool = False,
    compress: bool | None = None,
) -> ArtifactInfo:
    """Write `df` as an Arrow IPC file (no index), atomically; with `base`, the artifact the
    task read whose untouched columns `df` holds, as a delta of it (`store.deltas`). A frame
    between stages is synced to disk only when ``durable`` (or when this process has no boot
    id to stamp it with); on an object store every object is whole and kept once written.
    A frame over `SMALL` is LZ4-compressed when ``compress`` (None: as `set_compression`
    said, by default yes; always on an object store)."""
    if (store := remote(path)) is not None:
        return store.write_frame(str(path), df, base=base)
    target = Path(path)
    atomic.make_dir(target.parent)
    tmp = atomic.tmp_path(target)
    try:
        table = _delta(df, base, target) if base is not None else None
        if table is None:
            table = pa.Table.from_pandas(df, preserve_index=False)
        boot = boot_id()
        if boot is not None:
            table = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), BOOT_KEY: boot.encode()}
            )
        # stamped: a reader after a restart checks its hash instead of trusting a sync
        durable = durable or boot is None
        if table.nbytes <= SMALL:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=1_000_000)
            size, sha = atomic.write_small(
                tmp, target, memoryview(sink.getvalue()), durable=durable
            )
        else:
            plain = not (_compress[0] if compress is None else compress)
            size, sha = atomic.write_stream(tmp, target, table, durable=durable, plain=plain)
    except (OSError, pa.ArrowException) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ArtifactError(f"cannot write artifact {str(target)!r}: {exc}") from exc
    return ArtifactInfo(str(target), len(df), size, sha)


def _delta(df: pd.DataFrame, base: Base, target: Path) -> pa.Table | None:
    """`df` as a delta of `base`, or None when it is better written whole: the base is not an
    Arrow IPC file of this store, or too many deltas deep."""
    if is_slice(base.path) or not base.columns:
        return None
    try:
        with pa.memory_map(base.path, "r") as source:
            schema = pa.ipc.open_file(source).schema
    except (OSError, pa.ArrowException):
        return None
    return deltas.delta_table(df, base, schema, target)


def write_bytes(path: str | Path, data: bytes) -> ArtifactInfo:
    """Write opaque bytes (partials, stats) atomically."""
    if (store := remote(path)) is not None:
        return store.write_bytes(str(path), data)
    target = Path(path)
    atomic.make_dir(target.parent)
    tmp = atomic.tmp_path(target)
    try:
        size, sha = atomic.write_small(tmp, target, data)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ArtifactError(f"cannot write artifact {str(target)!r}: {exc}") from exc
    return ArtifactInfo(str(target), 0, size, sha)


def to_frame(table: pa.Table) -> pd.DataFrame:
    """A table as a frame, its buffers freed as they are converted (a small one, the columns
    of its schema known: see `smallframes`)."""
    return small_frame(table, _to_pandas)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(
        split_blocks=True, self_destruct=True, use_threads=uses_threads(table.num_rows)
    )


def slice_info(artifact: str) -> ArtifactInfo:
    """Rows, bytes and content hash of a slice (the bytes of its row groups' column chunks)."""
    rows, size, sha = slice_hash(artifact)
    return ArtifactInfo(artifact, rows, size, sha)


def artifact_bytes(artifact: str) -> int:
    """An artifact's size in bytes (of a slice: its row groups' column chunks, not hashed; of
    a delta: its own file, not its base's)."""
    if (store := remote(artifact)) is not None:
        return store.size(artifact)
    if not is_slice(artifact):
        return Path(artifact).stat().st_size
    return slice_bytes(artifact)


def read_table(
    artifact: str | Path,
    columns: Sequence[str] | None = None,
    sha256: str | None = None,
    depth: int = 0,
) -> pa.Table:
    """The artifact as one table (`columns` only, in the artifact's order, when given);
    `sha256`, its hash as its producer recorded it, to check a frame written before the
    machine restarted (`trust`)."""
    text = str(artifact)
    if is_slice(text):
        return _select(read_slice(text), columns)
    if (store := remote(text)) is not None:
        table = store.read_table(text, None, sha256)  # a delta's link stays in its schema
    else:
        try:
            mapped = pa.memory_map(text, "r")
        except FileNotFoundError:
            raise _missing(text) from None
        with mapped as source:
            try:
                reader = pa.ipc.open_file(source)
            except pa.ArrowInvalid:
                if sha256 is not None and file_sha256(text) != sha256:
                    raise _damaged(text, "") from None
                raise
            trust(text, reader.schema, sha256)  # before a damaged batch can fail the read
            table = _read_fields(source, reader, columns)
    link = deltas.link_of(table.schema)
    if link is None:
        return _select(_unstamped(table), columns)
    if depth >= deltas.MAX_DEPTH:
        raise ValueError(f"a delta over more than {deltas.MAX_DEPTH} deltas")
    wanted = [c for c in link.columns if columns is None or c in columns]
    rest = [c for c in wanted if c not in table.column_names]
    base = read_table(link.base_path(text), rest, link.sha256, depth + 1)
    return deltas.combine(link, _unstamped(table), base, wanted)


def _read_fields(
    source: pa.MemoryMappedFile, reader: pa.ipc.RecordBatchFileReader, columns: Sequence[str] | None
) -> pa.Table:
    """The file's columns among `columns` (all when None, or when it holds none of them: a
    table of no column would lose the row count). Only those are read, and decompressed."""
    names = reader.schema.names
    wanted = set(columns or ())
    keep = [i for i, name in enumerate(names) if name in wanted]
    if not keep or len(keep) == len(names):
        return reader.read_all()
    options = pa.ipc.IpcReadOptions(included_fields=keep)
    return pa.ipc.open_file(source, options=options).read_all()


def boot_id() -> str | None:
    """This machine's boot id (None where there is none to read): what an unsynced frame is
    stamped with. A crash test that simulates a power cut sets another (`set_boot_id`)."""
    if not _boot:
        try:
            _boot.append(BOOT_ID_FILE.read_text().strip() or None)
        except OSError:
            _boot.append(None)
    return _boot[0]


def set_compression(on: bool) -> None:
    """Whether this process LZ4-compresses the frames over `SMALL` it writes (a worker's
    ``compress_frames``, which its runner is told at its start)."""
    _compress[0] = on


def set_boot_id(value: str | None) -> None:
    """Take `value` as this process's boot id (None: read the machine's)."""
    _boot.clear()
    if value:
        _boot.append(value)


def trust(path: str, schema: pa.Schema, sha256: str | None) -> None:
    """Raise `ArtifactError` unless the frame at `path` can be used as it is: synced when
    written (no stamp), written since this machine started, or hashing to `sha256`."""
    stamp = (schema.metadata or {}).get(BOOT_KEY)
    if stamp is None or stamp.decode(errors="replace") == boot_id():
        return
    if sha256 is None:
        raise ArtifactLostError(
            f"artifact {path!r} was written before this machine restarted and its hash is not"
            " known here; run the execution again (resume_from recomputes what is damaged)",
            path=path,
        )
    if file_sha256(path) != sha256:
        raise _damaged(path, " was written before this machine restarted and")


def _damaged(path: str, how: str) -> ArtifactLostError:
    return ArtifactLostError(
        f"artifact {path!r}{how} is damaged (its hash does not match what its producer"
        " recorded); run the execution again (resume_from recomputes it)",
        path=path,
    )


def _missing(path: str) -> ArtifactLostError:
    return ArtifactLostError(
        f"artifact {path!r} is missing; run the execution again (resume_from recomputes it)",
        path=path,
    )


def _lost_in(path: str | Path, exc: ArtifactLostError) -> ArtifactLostError:
    """`exc` as the reader of `path` says it, still naming the file that is lost."""
    return ArtifactLostError(f"cannot read artifact {str(path)!r}: {exc}", path=exc.path)


def _unstamped(table: pa.Table) -> pa.Table:
    meta = table.schema.metadata
    if not meta or BOOT_KEY not in meta:
        return table
    return table.replace_schema_metadata({k: v for k, v in meta.items() if k != BOOT_KEY})


def _select(table: pa.Table, columns: Sequence[str] | None) -> pa.Table:
    if columns is None:
        return table
    return table.select([c for c in table.column_names if c in columns])


def column_names(artifact: str | Path) -> list[str]:
    """The columns of a frame artifact, in order, from its schema alone."""
    text = str(artifact)
    if (store := remote(text)) is not None:
        return store.column_names(text)
    try:
        if is_slice(text):
            return list(read_slice_schema(text).names)
        with pa.memory_map(text, "r") as source:
            schema = pa.ipc.open_file(source).schema
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"cannot read artifact {text!r}: {exc}") from exc
    link = deltas.link_of(schema)
    return list(schema.names if link is None else link.columns)


def read_bytes(path: str | Path) -> bytes:
    if (store := remote(path)) is not None:
        return store.read_bytes(str(path))
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise _missing(str(path)) from None
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {str(path)!r}: {exc.strerror}") from exc


def read_frames(
    paths: Sequence[str | Path],
    columns: Sequence[str] | None = None,
    hashes: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The Arrow IPC files end to end, as one frame (memory-mapped; `columns` to read fewer);
    `hashes` by path, as their producers recorded them (see `trust`)."""
    tables = []
    for path in paths:
        try:
            table = read_table(path, columns, (hashes or {}).get(str(path)))
        except ArtifactLostError as exc:
            raise _lost_in(path, exc) from exc
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise ArtifactError(f"cannot read artifact {str(path)!r}: {exc}") from exc
        tables.append(table)
    if not tables:
        raise ArtifactError("no artifacts to read")
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return to_frame(table)


def write_parquet(
    path: str | Path, parts: Sequence[str | Path], hashes: Mapping[str, str] | None = None
) -> ArtifactInfo:
    """Stream Arrow IPC parts, in order, into one parquet file (one part in memory at a time);
    `hashes` of the parts by path, as for `read_frames`."""
    if (store := remote(path)) is not None:
        return store.write_parquet(str(path), [str(p) for p in parts], hashes)
    target = Path(path)
    make_private_dir(target.parent)
    tmp = atomic.tmp_path(target)
    try:
        rows = parts_to_parquet(tmp, parts, hashes)
        size, sha = atomic.finish(tmp, target)
    except (OSError, pa.ArrowException, ValueError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, ArtifactLostError):
            raise ArtifactLostError(
                f"cannot write output {str(target)!r}: {exc}", path=exc.path
            ) from exc
        raise ArtifactError(f"cannot write output {str(target)!r}: {exc}") from exc
    return ArtifactInfo(str(target), rows, size, sha)


def parts_to_parquet(
    file: Path, parts: Sequence[str | Path], hashes: Mapping[str, str] | None = None
) -> int:
    """Write the parts, in order, into the parquet file ``file`` (one part in memory at a
    time); the rows written. Raises what reading or writing raised; ``file`` may be left half
    written (the caller's temp or spool file)."""
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for part in parts:
            table = read_table(part, sha256=(hashes or {}).get(str(part)))
            if writer is None:
                writer = pq.ParquetWriter(str(file), table.schema, compression="snappy")
            elif not table.schema.equals(writer.schema, check_metadata=False):
                # slices of the input beside frames a stage wrote: same columns, and types
                # (string widths, time units) that cast
                table = table.cast(writer.schema)
            writer.write_table(table, row_group_size=1_000_000)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def file_sha256(path: str | Path) -> str:
    """The content hash of an artifact (of a slice: its row groups' bytes)."""
    if is_slice(path):
        return slice_hash(str(path))[2]
    if (store := remote(path)) is not None:
        return store.file_sha256(str(path))
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(atomic.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | Path, sha256: str, *, base: bool = True) -> bool:
    """True when the file exists and its content hashes to `sha256`, and, for a delta (unless
    not `base`), when its base verifies against the hash the delta names (and so on down)."""
    if (store := remote(path)) is not None:
        if not store.verify(str(path), sha256):
            return False
        return not base or base_verifies(path)
    try:
        if file_sha256(path) != sha256:
            return False
    except OSError:
        return False
    return not base or base_verifies(path)


def base_verifies(path: str | Path) -> bool:
    """False when `path` is a delta whose base, or the base's base..., is missing or does not
    hash to what the delta above it names; True for any other artifact (nothing is hashed)."""
    for _ in range(deltas.MAX_DEPTH + 1):
        try:
            link = None if is_slice(path) else _link_at(path)
            if link is None:
                return True
            path = link.base_path(path)
            if file_sha256(path) != link.sha256:
                return False
        except (OSError, pa.ArrowException, ValueError):
            return False
    return False


def _link_at(path: str | Path) -> deltas.Link | None:
    """The delta link of the file at `path`; None for anything but a delta."""
    if (store := remote(path)) is not None:
        schema = store.frame_schema(str(path))
        return None if schema is None else deltas.link_of(schema)
    with Path(path).open("rb") as f:
        if f.read(len(IPC_MAGIC)) != IPC_MAGIC:
            return None
    with pa.memory_map(str(path), "r") as source:
        return deltas.link_of(pa.ipc.open_file(source).schema)


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Put `source`'s content at `target` (a hard link when the file system allows; a
    server-side copy on an object store)."""
    if (store := remote(target)) is not None:
        store.link_or_copy(str(source), str(target))
        return
    if (store := remote(source)) is not None:
        write_bytes(target, store.read_bytes(str(source)))
        return
    src, dst = Path(source), Path(target)
    make_private_dir(dst.parent)
    tmp = atomic.tmp_path(dst)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        try:
            os.link(src, tmp)
        except OSError:
            with src.open("rb") as fin, tmp.open("wb") as fout:
                while chunk := fin.read(atomic.CHUNK):
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
        tmp.replace(dst)
        fsync_dir(dst.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ArtifactError(f"cannot reuse artifact {str(src)!r}: {exc.strerror}") from exc


def disk_bytes(paths: Sequence[str | Path]) -> int:
    """Bytes of the files under these directories (or of these files); what is missing is 0.

    A file hard-linked from another execution (a reused artifact) counts here too, though its
    space is freed only with its last link. Prefixes of an object store count their objects."""
    total = 0
    far = [str(p) for p in paths if is_remote(p)]
    if far:
        store = remote(far[0])
        assert store is not None
        total += store.disk_bytes(far)
    for path in paths:
        if is_remote(path):
            continue
        top = Path(path)
        if top.is_file():
            with contextlib.suppress(OSError):
                total += top.stat().st_size
            continue
        for folder, _, files in os.walk(top):
            for name in files:
                with contextlib.suppress(OSError):
                    total += (Path(folder) / name).lstat().st_size
    return total


def remove_paths(paths: Sequence[str | Path], *, inside: str | Path) -> list[str]:
    """Delete these directories (or files), each of which must lie inside ``inside``, then
    ``inside`` itself if that left it empty. What is gone already is skipped, so doing it again
    is harmless. Returns the paths that existed; raises `ArtifactError` for a path outside.
    ``inside`` an object store, the prefixes' objects are deleted."""
    if (store := remote(inside)) is not None:
        return store.remove_paths([str(p) for p in paths], inside=str(inside))
    root = Path(inside).resolve()
    targets = []
    for path in paths:
        target = Path(path)
        if root not in target.resolve().parents:
            raise ArtifactError(f"refusing to remove {str(path)!r}: not inside {str(inside)!r}")
        targets.append(target)
    existed = []
    for target in targets:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists() or target.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        else:
            continue
        existed.append(str(target))
    with contextlib.suppress(OSError):
        root.rmdir()  # only when nothing else is left in it
    return existed


class LocalStore:
    """`store.objstore.ArtifactStore` over a local folder: the functions above, as they always
    were (temp file renamed into place, fsyncs, boot-stamped frames, deltas, hard links)."""

    write_frame = staticmethod(write_frame)
    write_bytes = staticmethod(write_bytes)
    write_parquet = staticmethod(write_parquet)
    read_bytes = staticmethod(read_bytes)
    file_sha256 = staticmethod(file_sha256)
    verify = staticmethod(verify)
    link_or_copy = staticmethod(link_or_copy)
    disk_bytes = staticmethod(disk_bytes)
    remove_paths = staticmethod(remove_paths)
