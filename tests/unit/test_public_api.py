"""The public API: every name in ``meshchat.__all__`` stays importable."""

from __future__ import annotations

import importlib.metadata
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import meshchat
from meshchat.cli import main


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
