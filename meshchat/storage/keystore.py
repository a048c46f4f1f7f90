"""The data dir and the identity key file, plus the private-file helpers the other stores use.

``identity.key`` holds the raw 32-byte Ed25519 seed. It is born 0600 (written to a temporary
file created with that mode, then linked into place), never rewritten once it exists, and a
damaged one stops the node with an error that names it: silently making a new key would change
the node's peer id under every peer that pinned it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from pathlib import Path

import click

from meshchat.errors import MeshchatError
from meshchat.identity import Identity

log = logging.getLogger(__name__)

APP_NAME = "meshchat"
IDENTITY_FILE = "identity.key"
SEED_BYTES = 32
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700

_POSIX_MODES = os.name == "posix"


def default_data_dir() -> Path:
    """Where meshchat keeps its files unless ``--data-dir`` says otherwise."""
    return Path(click.get_app_dir(APP_NAME))


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if missing; a directory meshchat creates is 0700."""
    if path.is_dir():
        return
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise MeshchatError(f"cannot create data directory {path}: {exc}") from exc
    if not path.is_dir():
        raise MeshchatError(f"data directory {path} exists but is not a directory")


def move_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.corrupt-<unix time>`` so nothing is lost; OSError if
    it cannot be moved."""
    backup = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    os.replace(path, backup)
    return backup


def write_private_file(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` atomically with mode 0600 from the first byte.

    The bytes go to a temporary file in the same directory (created 0600 with ``O_EXCL``),
    are fsynced, and then take the final name. With ``replace=False`` an existing ``path`` is
    left alone and False is returned, so two processes creating the same file cannot both win.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left over from a crash of a process with our pid
    fd = os.open(tmp, flags, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:
                # A filesystem without hard links: fall back to an exclusive check and rename.
                if path.exists():
                    return False
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)
    return True


def tighten_mode(path: Path, warnings: list[str] | None = None) -> None:
    """Make an existing private file 0600 if group or others can access it, and say so."""
    if not _POSIX_MODES:
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, PRIVATE_FILE_MODE)
        message = f"{path} was accessible to other users (mode {mode:04o}); changed to 0600"
        log.warning(message)
        if warnings is not None:
            warnings.append(message)


def load_or_create_identity(data_dir: Path, warnings: list[str] | None = None) -> Identity:
    """The node's identity from ``data_dir/identity.key``, made on first start.

    Problems that were fixed (a key file readable by others) are logged and, if given,
    appended to ``warnings``. A key file that cannot be used raises ``MeshchatError`` and is
    left exactly as it was.
    """
    ensure_private_dir(data_dir)
    path = data_dir / IDENTITY_FILE
    if not path.exists():
        identity = Identity.generate()
        if write_private_file(path, identity.seed, replace=False):
            log.info("created identity %s in %s", identity.fingerprint, path)
            return identity
        # Another process created it first: use theirs, so both agree on the peer id.
    return _load_identity(path, warnings)


def _load_identity(path: Path, warnings: list[str] | None) -> Identity:
    if not path.is_file():
        raise MeshchatError(f"identity key {path} is not a regular file")
    try:
        with path.open("rb") as f:
            seed = f.read(SEED_BYTES + 1)
    except OSError as exc:
        raise MeshchatError(f"cannot read identity key {path}: {exc}") from exc
    if len(seed) != SEED_BYTES:
        size = f"{len(seed)} bytes" if len(seed) <= SEED_BYTES else "more than 32 bytes"
        raise MeshchatError(
            f"identity key {path} is corrupt ({size}, expected {SEED_BYTES}); it was left "
            "untouched. Restore it from a backup, or move it away to start with a new "
            "identity (peers will see a new fingerprint)."
        )
    try:
        tighten_mode(path, warnings)
    except OSError as exc:
        raise MeshchatError(f"cannot restrict permissions of identity key {path}: {exc}") from exc
    return Identity(seed)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a no-op where directories cannot be opened."""
    if not _POSIX_MODES:
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
