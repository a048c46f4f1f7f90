"""File transfer's disk (issue 7): the disk thread, and where a transfer's files are.

``Files`` (``runtime.files``) decides when to read, write, check and move; everything it
does to the file system is here: the one thread that writes chunks and keeps the running
whole-file sums, the sender's scan of a file or folder and its change signature, the
receiver's ``NAME.part`` files (one per file, in a ``NAME.part`` folder for a tree), the
whole-file check, and the move into place, which never leaves the chosen folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..errors import FileError
from ..filenames import free_path, inside
from ..storage.transfers import TransferRecord
from ..transfer import Layout, RunningSums, chunk_matches

__all__ = [
    "DiskThread",
    "check_file",
    "close_all",
    "expand",
    "finish_sha256",
    "is_tree",
    "open_parts",
    "part_paths",
    "place",
    "remove_parts",
    "scan",
    "signature",
    "size_text",
    "source_paths",
    "source_unchanged",
]

_HASH_BLOCK = 1 << 20


class DiskThread:
    """The receiver's writes and both sides' running sums (``RunningSums``), on one thread of
    their own, in order. A 128 KiB ``pwrite`` costs the loop 0.2-2 ms on a VM and hashing a
    chunk as much as checking it; meanwhile the loop serves pings, chat and the next chunk.

    A write is never skipped: the credit window bounds how many wait (``Pull.written`` gives
    a chunk's credit back only once it is written). A sum fed without a write (the sender's)
    waits only if fewer than ``backlog`` tasks do; past that it is not fed and the sum is
    finished from disk at the end instead (slower, as right). A file is closed here too, after
    the writes queued for it.
    """

    def __init__(self, backlog: int) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="meshchat-disk")
        self._backlog = backlog
        self._submitted = 0  # written by the loop only
        self._completed = 0  # written by the thread only
        self._closed = False

    def feed(self, sums: RunningSums, file: int, offset: int, data: bytes) -> None:
        if not self._closed and self._submitted - self._completed < self._backlog:
            self._submit(sums.feed, file, offset, data)

    def write(self, fd: int, offset: int, data: bytes, sums: RunningSums, file: int
              ) -> asyncio.Future[None]:
        """``data`` written at ``offset`` of ``fd`` (raises ``OSError``), then fed to the sum."""
        if self._closed:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_exception(OSError(errno.ESHUTDOWN, "the node is stopping"))
            return done
        return asyncio.wrap_future(self._submit(_write_chunk, fd, offset, data, sums, file))

    def forget(self, sums: RunningSums, file: int) -> None:
        if not self._closed:
            self._submit(sums.forget, file)

    def close_fds(self, fds: list[int]) -> None:
        if self._closed:
            close_all(fds)
        else:
            self._submit(close_all, fds)

    async def resume(self, sums: RunningSums, files: Sequence[int]
                     ) -> list[tuple[hashlib._Hash, int]]:
        """Each file's sum so far, once every chunk fed before has been hashed."""
        if self._closed:
            return [RunningSums().resume(f) for f in files]
        return await asyncio.wrap_future(
            self._pool.submit(lambda: [sums.resume(f) for f in files]))

    def close(self) -> None:
        """Writes not begun are dropped (not recorded: fetched again on resume); the one
        under way ends first, so no file it writes is closed under it."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, fn: Callable[..., None], *args: object) -> Future[None]:
        self._submitted += 1
        return self._pool.submit(self._counted, fn, *args)

    def _counted(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        finally:
            self._completed += 1


def _write_chunk(fd: int, offset: int, data: bytes, sums: RunningSums, file: int) -> None:
    if os.pwrite(fd, data, offset) != len(data):
        raise OSError(errno.ENOSPC, "short write")
    sums.feed(file, offset, data)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# ---------------------------------------------------------------- where the files are


def is_tree(rec: TransferRecord) -> bool:
    """A folder: its files' paths start with the folder's name (a file's has no "/")."""
    return "/" in rec.files[0][0]


def _below(rel: str) -> list[str]:
    """A tree file's path below the folder (its first part is the folder's name)."""
    return rel.split("/")[1:]


def part_paths(rec: TransferRecord) -> list[Path]:
    """The receiver's partial files: ``NAME.part`` beside the destination, or for a tree
    each file under a ``NAME.part`` folder."""
    dest = Path(rec.path)
    root = dest.parent / (dest.name + ".part")
    if not is_tree(rec):
        return [root]
    return [root.joinpath(*_below(rel)) for rel, _ in rec.files]


def open_parts(rec: TransferRecord) -> dict[int, int]:
    """Each partial file opened for writing (created 0600, never through a symlink)."""
    dest = Path(rec.path)
    fds: dict[int, int] = {}
    try:
        for i, part in enumerate(part_paths(rec)):
            if not inside(dest.parent, part):
                raise OSError(errno.EPERM, "outside the folder")
            part.parent.mkdir(parents=True, exist_ok=True)
            fds[i] = os.open(part, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                             0o600)
    except OSError:
        close_all(list(fds.values()))
        raise
    return fds


def remove_parts(rec: TransferRecord) -> None:
    """A failed or cancelled incoming transfer's partial files, gone."""
    for part in part_paths(rec):
        with contextlib.suppress(OSError):
            part.unlink()
    if is_tree(rec):
        with contextlib.suppress(OSError):
            shutil.rmtree(Path(rec.path + ".part"))


def place(rec: TransferRecord) -> Path:
    """The checked partial files moved to the destination (or a free name beside it, if
    something took it meanwhile); where they now are. Raises ``OSError``."""
    dest = Path(rec.path)
    final = dest if not os.path.lexists(dest) else free_path(dest.parent, dest.name)
    parts = part_paths(rec)
    if not is_tree(rec):
        os.replace(parts[0], final)
        return final
    for part, (rel, _) in zip(parts, rec.files, strict=True):
        target = final.joinpath(*_below(rel))
        if not inside(final.parent, target):
            raise OSError(errno.EPERM, "outside the folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
    with contextlib.suppress(OSError):
        shutil.rmtree(dest.parent / (dest.name + ".part"))
    return final


def check_file(part: Path, h: hashlib._Hash, offset: int, expected: bytes, layout: Layout,
               file: int, stored: dict[int, bytes]) -> tuple[bool, list[int]]:
    """Whether ``part`` (hashed up to ``offset`` in ``h``) has the SHA-256 ``expected``; if
    not, its chunks whose digest is not the stored one (fetched again). Blocking."""
    if finish_sha256(part, h, offset) == expected:
        return True, []
    bad = []
    with open(part, "rb") as fh:
        for i in layout.chunks_of(file):
            s = layout.span(i)
            fh.seek(s.offset)
            if not chunk_matches(fh.read(s.length), stored.get(i)):
                bad.append(i)
    return False, bad


def source_paths(rec: TransferRecord) -> list[Path]:
    src = Path(rec.source)
    if not is_tree(rec):
        return [src]
    return [src.joinpath(*_below(rel)) for rel, _ in rec.files]


def source_unchanged(rec: TransferRecord) -> bool:
    """The sender's files still have the sizes and modification times they were offered with."""
    try:
        paths = source_paths(rec)
        sizes = [p.stat().st_size for p in paths]
        return sizes == [s for _, s in rec.files] and signature(paths) == rec.mtime_ns
    except OSError:
        return False


def scan(source: Path) -> tuple[list[tuple[str, int]], list[Path], list[str]]:
    """A file, or a folder as a tree: (relative path, size) each, the paths, and the
    symlinks left out."""
    try:
        st = source.lstat()
    except OSError as exc:
        raise FileError(f"{source}: {exc.strerror or 'cannot read'}") from exc
    if source.is_symlink():
        raise FileError(f"{source} is a symlink: not followed")
    if source.is_file():
        if not os.access(source, os.R_OK):
            raise FileError(f"{source}: permission denied")
        return [(source.name, st.st_size)], [source], []
    if not source.is_dir():
        raise FileError(f"{source} is not a file or a folder")
    items: list[tuple[str, int]] = []
    paths: list[Path] = []
    skipped: list[str] = []
    for root, dirs, files in os.walk(source, followlinks=False):
        dirs.sort()
        for name in [*sorted(files), *[d for d in dirs if Path(root, d).is_symlink()]]:
            p = Path(root, name)
            rel = f"{source.name}/{p.relative_to(source).as_posix()}"
            if p.is_symlink():
                skipped.append(rel)
                continue
            if not p.is_file() or not os.access(p, os.R_OK):
                skipped.append(rel)
                continue
            items.append((rel, p.stat().st_size))
            paths.append(p)
    if not items:
        raise FileError(f"{source} has no file to send")
    return items, paths, skipped


def signature(paths: list[Path]) -> int:
    """The files' sizes and modification times, in 56 bits."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
    return int.from_bytes(h.digest()[:7], "big")


def finish_sha256(path: Path, h: hashlib._Hash, offset: int) -> bytes:
    """``h`` holds the SHA-256 of ``path``'s first ``offset`` bytes: read on to the end."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        while block := fh.read(_HASH_BLOCK):
            h.update(block)
    return h.digest()


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def expand(path: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(path)).expanduser()
