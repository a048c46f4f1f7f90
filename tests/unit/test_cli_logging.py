"""The log file in the data dir: INFO by default, ``MESHCHAT_LOG_LEVEL`` for more (or less)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshchat import cli


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers = []
    root.setLevel(logging.NOTSET)
    yield root
    for handler in root.handlers:
        handler.close()
    root.handlers, root.level = handlers, level


@pytest.mark.parametrize(("value", "level"), [
    ("", logging.INFO), ("debug", logging.DEBUG), (" Warning ", logging.WARNING),
    ("loud", logging.INFO), ("notset", logging.INFO),
])
def test_the_log_file_takes_the_level_the_environment_asks_for(
        tmp_path: Path, root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
        value: str, level: int) -> None:
    monkeypatch.setenv("MESHCHAT_LOG_LEVEL", value)
    cli._log_to_file(tmp_path)
    assert root_logger.level == level
    logging.getLogger("meshchat.test").debug("a debug record")
    logging.getLogger("meshchat.test").warning("a warning record")
    for handler in root_logger.handlers:
        handler.flush()
    text = (tmp_path / "logs" / "meshchat.log").read_text()
    assert "a warning record" in text
    assert ("a debug record" in text) == (level == logging.DEBUG)
