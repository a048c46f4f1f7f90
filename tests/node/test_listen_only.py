"""`meshchat rooms` looks without leaving a trace: no name saved, no key made in the data dir."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from meshchat.cli import main


def test_rooms_query_leaves_the_users_data_dir_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "settings.json").write_text('{"name": "alice"}')
    result = CliRunner().invoke(main, ["rooms", "--json", "--timeout", "0.2", "--loopback-only",
                                       "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "[]"
    assert sorted(p.name for p in data.iterdir()) == ["settings.json"]
    assert '"alice"' in (data / "settings.json").read_text()
