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
import threading
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        # writes ended on the thread, not yet handed back to the loop: (done, error)
        self._ended: list[tuple[Callable[[BaseException | None], None], BaseException | None]] = []

    def feed(self, sums: RunningSums, file: int, offset: int, data: bytes) -> None:
        if not self._closed and self._submitted - self._completed < self._backlog:
            self._submit(sums.feed, file, offset, data)

    def write(self, fd: int, offset: int, data: bytes, sums: RunningSums, file: int,
              done: Callable[[BaseException | None], None]) -> None:
        """``data`` written at ``offset`` of ``fd``, then fed to the sum; ``done`` is called
        on the loop with what it raised (``None``: written). Writes that end together are
        handed back together, one wake-up of the loop for all of them. A write dropped by
        ``close`` never calls ``done``."""
        loop = asyncio.get_running_loop()
        if self._closed:
            loop.call_soon(done, OSError(errno.ESHUTDOWN, "the node is stopping"))
            return
        self._loop = loop
        self._submit(self._write, fd, offset, data, sums, file, done)

    def _write(self, fd: int, offset: int, data: bytes, sums: RunningSums, file: int,
               done: Callable[[BaseException | None], None]) -> None:
        error: BaseException | None = None
        try:
            _write_chunk(fd, offset, data, sums, file)
        except Exception as exc:  # handed to ``done``, on the loop
            error = exc
        with self._lock:
            self._ended.append((done, error))
            first = len(self._ended) == 1
        if first and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                self._loop.call_soon_threadsafe(self._hand_back)

    def _hand_back(self) -> None:
        with self._lock:
            ended, self._ended = self._ended, []
        if self._closed:
            # Closed meanwhile: the transfer store is closed too, so a chunk recorded now
            # would be counted and never saved. Its data is on disk; the resume fetches it
            # again, like every write dropped by ``close``.
            return
        for done, error in ended:
            done(error)

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
        under way ends first, so no file it writes is closed under it, and no write that
        ends after this (or ended and is not handed back yet) calls its ``done``."""
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
    _drop_behind(fd, offset, len(data))
    sums.feed(file, offset, data)


# Drop-behind: what was written WRITEBACK_LAG ago is sent to the disk, and what was written
# DROP_LAG ago (clean by then) leaves the page cache. A transfer of any size then holds at
# most about DROP_LAG of the file in memory instead of filling the page cache with data
# nobody reads again (the whole-file hash is taken as the chunks pass), and the pages it
# gives back are the ones its next writes reuse. On a VM a page the guest never touched
# costs its first write dearly: 1 GiB into fresh pages took 2.6 s of the disk thread, into
# reused ones 0.8 s (bench ``files``: 216-223 -> 251-297 MiB/s). The final fsync before
# delivery (``check_file``) then has at most WRITEBACK_LAG left to write.
WRITEBACK_LAG = 8 << 20
DROP_LAG = 32 << 20
_fadvise = getattr(os, "posix_fadvise", None)


def _drop_behind(fd: int, offset: int, length: int) -> None:
    if _fadvise is None:
        return
    with contextlib.suppress(OSError):  # advice only: a file system may not take it
        if offset >= WRITEBACK_LAG:  # DONTNEED on dirty pages starts their writeback
            _fadvise(fd, offset - WRITEBACK_LAG, length, os.POSIX_FADV_DONTNEED)
        if offset >= DROP_LAG:  # and on clean ones drops them
            _fadvise(fd, offset - DROP_LAG, length, os.POSIX_FADV_DONTNEED)


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
        _sync_dir(final.parent)
        return final
    folders = {final.parent}
    for part, (rel, _) in zip(parts, rec.files, strict=True):
        target = final.joinpath(*_below(rel))
        if not inside(final.parent, target):
            raise OSError(errno.EPERM, "outside the folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
        folders.add(target.parent)
    with contextlib.suppress(OSError):
        shutil.rmtree(dest.parent / (dest.name + ".part"))
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        _sync_dir(folder)
    return final


def _sync_dir(folder: Path) -> None:
    """The renames in ``folder`` on disk too (the files themselves are, ``check_file``)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_file(part: Path, h: hashlib._Hash, offset: int, expected: bytes, layout: Layout,
               file: int, stored: dict[int, bytes]) -> tuple[bool, list[int]]:
    """Whether ``part`` (hashed up to ``offset`` in ``h``) has the SHA-256 ``expected``; if
    not, its chunks whose digest is not the stored one (fetched again). A file that matches
    is on disk (fsync) before this returns: it is delivered next, and "done" is final for
    both sides. Blocking."""
    if finish_sha256(part, h, offset) == expected:
        fd = os.open(part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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
