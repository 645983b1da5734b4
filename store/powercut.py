"""What a power cut would leave: a journal of what was synced, and the cut that applies it.

kill -9 keeps the page cache: every byte a killed process wrote is still there for the next
one to read, synced or not. A power cut keeps only what reached the disk. To test that, the
processes of a crash test run with ``PORCH_SYNC_JOURNAL=FILE``: their sync observer (see
`store.fsutil.sync_observer`) is then a `SyncJournal`, which records the length of each log
segment synced and the names each synced directory held. After killing every process, `cut`
makes the files what a power cut could have left:

- a log segment is cut to its last synced length (a segment never synced is emptied);
- a file or directory that no sync of its directory listed is removed (its creation or rename
  had not reached the disk), and so is every temp file.

Only log segments are cut by length. Other files are kept whole when listed: final outputs
and byte artifacts are fsynced before their rename, and the rest (tracebacks, locks, run files)
carry no promise; but frames between stages (``.arrow``) are never synced, so the cut damages
every one it keeps (zeros over its first half, the magic and the footer left), as a power cut
may leave a file whose blocks never reached the disk. The processes started after a cut get a
new boot id (``PORCH_BOOT_ID``, `boot_from_environ`), as after a real restart, so that a
reader hashes the frames written before it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Final

ENV: Final = "PORCH_SYNC_JOURNAL"
BOOT_ENV: Final = "PORCH_BOOT_ID"
FRAME_SUFFIX: Final = ".arrow"


class SyncJournal:
    """A sync observer that appends what each sync made durable to a journal file, one JSON
    line per sync; several processes may share the file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def listing(self, directory: Path) -> list[str]:
        """The names in ``directory`` but temp files, taken just before its sync."""
        return sorted(p.name for p in Path(directory).iterdir() if p.suffix != ".tmp")

    def synced_dir(self, directory: Path, names: list[str]) -> None:
        """Record that the ``names`` listed before a sync of ``directory`` are on disk."""
        self._write({"dir": str(directory), "names": names})

    def synced_size(self, path: Path, size: int) -> None:
        """Record that ``path`` is on disk up to ``size`` bytes."""
        self._write({"file": str(path), "size": size})

    def _write(self, entry: dict[str, object]) -> None:
        # one write of one line with O_APPEND: lines of several processes do not interleave
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)


def from_environ(environ: Mapping[str, str]) -> SyncJournal | None:
    """The journal ``PORCH_SYNC_JOURNAL`` names (a crash test), or None."""
    path = environ.get(ENV)
    return SyncJournal(path) if path else None


def boot_from_environ(environ: Mapping[str, str]) -> str | None:
    """The boot id a crash test gives the processes it starts (``PORCH_BOOT_ID``), or None."""
    return environ.get(BOOT_ENV) or None


def read(journal: Path) -> tuple[dict[str, int], dict[str, set[str]]]:
    """The last synced size of each file, and the names of each synced directory ever seen.

    A name counts as on disk once any sync of its directory listed it: a later removal (a
    dropped checkpoint) that was not synced yet would bring it back, which the cut ignores.
    """
    sizes: dict[str, int] = {}
    names: dict[str, set[str]] = {}
    if not journal.exists():
        return sizes, names
    for line in journal.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill itself
        if "file" in entry:
            sizes[entry["file"]] = max(sizes.get(entry["file"], 0), int(entry["size"]))
        elif "dir" in entry:
            names.setdefault(entry["dir"], set()).update(entry["names"])
    return sizes, names


def cut(journal: Path, root: Path, segment_suffix: str) -> dict[str, int]:
    """Make the files under ``root`` what a power cut could leave; counts of what it did.

    Strict: an entry under ``root`` survives only if a sync of its directory listed it, so a
    directory created without a sync of its parent is lost with all it holds.
    """
    sizes, names = read(journal)
    done = {"truncated_bytes": 0, "removed": 0, "damaged": 0}
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts)):
        if not path.exists() and not path.is_symlink():
            continue  # went with its directory
        listed = names.get(str(path.parent), set())
        if path.name.endswith(".tmp") or path.name not in listed:
            if path.is_dir() and not path.is_symlink():
                done["removed"] += sum(1 for _ in path.rglob("*")) + 1
                shutil.rmtree(path)
            else:
                path.unlink()
                done["removed"] += 1
            continue
        if path.name.endswith(segment_suffix) and path.is_file():
            keep = sizes.get(str(path), 0)
            size = path.stat().st_size
            if size > keep:
                os.truncate(path, keep)
                done["truncated_bytes"] += size - keep
        elif path.name.endswith(FRAME_SUFFIX) and path.is_file() and str(path) not in sizes:
            _damage(path)
            done["damaged"] += 1
    return done


def _damage(path: Path) -> None:
    """Zeros over the first half of the file but its first 8 bytes (an Arrow file's magic): it
    still opens, and its footer still reads, but its data is gone."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(8)
        f.write(bytes(max(0, size // 2 - 8)))
