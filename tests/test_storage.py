"""The one atomic-write helper for directories: all or nothing, and a lost race keeps the winner's copy."""

from __future__ import annotations

import pytest

from mvqa.data.storage import atomic_dir, write_dir_atomically


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_finished_block_swaps_the_new_dir_in(tmp_path):
    target = tmp_path / "adapter"
    write_dir_atomically(lambda d: (d / "v").write_text("1"), target)
    write_dir_atomically(lambda d: (d / "v").write_text("2"), target)
    assert (target / "v").read_text() == "2" and _leftovers(tmp_path) == []


def test_a_failed_block_leaves_the_previous_dir_and_no_temporary(tmp_path):
    target = tmp_path / "adapter"
    write_dir_atomically(lambda d: (d / "v").write_text("1"), target)
    with pytest.raises(RuntimeError, match="killed"), atomic_dir(target) as tmp:
        (tmp / "v").write_text("half")
        raise RuntimeError("killed")
    assert (target / "v").read_text() == "1" and _leftovers(tmp_path) == []


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "world", replace=False) as tmp:
        (tmp / "world.json").write_text("{}")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_cache_entry_finished_first_by_another_process_is_kept(tmp_path):
    target = tmp_path / "world-abc"
    with atomic_dir(target, replace=False) as tmp:
        (tmp / "mine").write_text("mine")
        target.mkdir()  # the other builder renames its identical copy into place meanwhile
        (target / "theirs").write_text("theirs")
    assert [p.name for p in target.iterdir()] == ["theirs"] and _leftovers(tmp_path) == []


def test_replacing_never_takes_a_lost_race_silently(tmp_path, monkeypatch):
    import os

    target = tmp_path / "adapter"
    real_rename = os.rename

    def failing_rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError("disk full")
        real_rename(src, dst)

    write_dir_atomically(lambda d: (d / "v").write_text("1"), target)
    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        write_dir_atomically(lambda d: (d / "v").write_text("2"), target)
    monkeypatch.undo()
    assert (target / "v").read_text() == "1" and _leftovers(tmp_path) == []
