"""The public API: every name in ``meshchat.__all__`` stays importable, and the interfaces (L4)
use nothing else (besides their own ``meshchat.tui`` and the command parser)."""

from __future__ import annotations

import ast
import importlib.metadata
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import meshchat
from meshchat.cli import main

PACKAGE = Path(meshchat.__file__).parent
INTERFACE_FILES = [PACKAGE / "cli.py", *sorted((PACKAGE / "tui").glob("*.py"))]
ALLOWED_FROM_THE_INTERFACE = {"meshchat", "meshchat.commands"}


def test_every_public_name_is_importable() -> None:
    for name in meshchat.__all__:
        assert getattr(meshchat, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from meshchat import *", namespace)  # what a bot's star import gets
    assert set(meshchat.__all__) <= set(namespace)
    assert {"default_data_dir", "log_dir", "PROTOCOL_VERSION", "__version__"} <= set(
        meshchat.__all__)


def test_version_is_the_installed_one() -> None:
    assert meshchat.__version__ == importlib.metadata.version("meshchat")
    result = CliRunner().invoke(main, ["--version"])
    assert result.output == f"meshchat {meshchat.__version__}\n"


def test_default_data_dir() -> None:
    assert meshchat.default_data_dir() == Path(click.get_app_dir("meshchat"))


def test_log_dir_is_made_private(tmp_path: Path) -> None:
    logs = meshchat.log_dir(tmp_path / "data")
    assert logs == tmp_path / "data" / "logs"
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert meshchat.log_dir(tmp_path / "data") == logs  # already there: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(meshchat.MeshchatError):
        meshchat.log_dir(tmp_path / "file")


@pytest.mark.parametrize("path", INTERFACE_FILES, ids=lambda p: p.name)
def test_the_interface_imports_only_the_public_api(path: Path) -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module)
            if node.module == "meshchat":  # `from meshchat import x`: x is a public name
                imported.update(f"meshchat.{a.name}" for a in node.names
                                if a.name not in meshchat.__all__)
    ours = {m for m in imported if m == "meshchat" or m.startswith("meshchat.")}
    internal = {m for m in ours if m not in ALLOWED_FROM_THE_INTERFACE
                and not m.startswith("meshchat.tui")}
    assert internal == set()
