"""Where the example checkpoint is written: a cache directory, never the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_server_ros import example_checkpoint

NAME = "act_sim_transfer_cube_scripted_zscore_example"


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """Folders ensure_example_checkpoint would write (nothing is written: 336 MB each)."""
    folders: list[Path] = []
    monkeypatch.setattr(example_checkpoint, "write_example_checkpoint",
                        lambda out, *args, **kw: folders.append(Path(out)))
    monkeypatch.chdir(tmp_path)  # a relative default would land here
    monkeypatch.delenv("POLICY_SERVER_ROS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return folders


def test_the_default_is_under_home_cache(written: list[Path], tmp_path: Path) -> None:
    path = example_checkpoint.ensure_example_checkpoint()
    # Before: ckpt/act_sim_... relative to the current directory.
    assert written == [path] == [tmp_path / "home" / ".cache" / "policy_server_ros" / NAME]


def test_xdg_cache_home_then_the_override_variable_choose_the_folder(
        written: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert example_checkpoint.ensure_example_checkpoint() == \
        tmp_path / "xdg" / "policy_server_ros" / NAME
    monkeypatch.setenv("POLICY_SERVER_ROS_CACHE", str(tmp_path / "mine"))
    assert example_checkpoint.ensure_example_checkpoint() == tmp_path / "mine" / NAME
    assert example_checkpoint.ensure_example_checkpoint(tmp_path / "given") == tmp_path / "given"
    assert not (tmp_path / "ckpt").exists()


def test_an_existing_checkpoint_is_not_written_again(written: list[Path],
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "home" / ".cache" / "policy_server_ros" / NAME
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    assert example_checkpoint.ensure_example_checkpoint() == folder and written == []
