"""Files: atomic writes that follow the umask, checksums, stale temporaries, directory locks."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mwt.errors import CheckpointError, MwtError
from mwt.io import (
    LOCK_FILE,
    TEMP_PREFIX,
    atomic_write_bytes,
    is_locked,
    load_tensors,
    lock_directory,
    read_artifact,
    remove_stale_temps,
    save_tensors,
    write_artifact,
)


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        save_tensors(tmp_path / "t.safetensors", {"w": torch.ones(2)})
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "t.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_is_one_sentence_and_leaves_no_temporary(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(MwtError, match="disk is full"):
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_writing_over_a_directory_is_an_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(MwtError, match="directory"):
        atomic_write_bytes(tmp_path / "d", b"x")


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    (tmp_path / f"{TEMP_PREFIX}checkpoint.safetensors.abc").write_bytes(b"half")
    (tmp_path / ".hidden-user-file").write_bytes(b"keep")
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [f"{TEMP_PREFIX}checkpoint.safetensors.abc"]
    assert (tmp_path / ".hidden-user-file").exists()


def test_a_bit_flip_in_a_tensor_file_is_detected(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"w": torch.arange(100, dtype=torch.float32)})
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        load_tensors(path)


def test_an_artifact_checks_its_json_checksum(tmp_path):
    write_artifact(tmp_path, "thing", {"w": torch.ones(3)}, {"format": "x/1"})
    meta, tensors = read_artifact(tmp_path, "thing", "x/1", "thing")
    assert len(meta["sha256"]) == 64 and torch.equal(tensors["w"], torch.ones(3))
    write_artifact(tmp_path / "other", "thing", {"w": torch.zeros(3)}, {"format": "x/1"})
    os.replace(tmp_path / "other" / "thing.safetensors", tmp_path / "thing.safetensors")
    with pytest.raises(CheckpointError, match="SHA-256"):
        read_artifact(tmp_path, "thing", "x/1", "thing")


def test_a_locked_directory_refuses_a_second_process(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from mwt.errors import MwtError
        from mwt.io import lock_directory
        try:
            with lock_directory({str(tmp_path)!r}):
                pass
        except MwtError as exc:
            print(exc)
            sys.exit(2)
    """)
    with lock_directory(tmp_path, "test"):
        assert is_locked(tmp_path)
        with lock_directory(tmp_path):  # re-entrant in the same process
            pass
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 2
        assert "in use by another mwt command" in done.stdout
        assert str(tmp_path) in done.stdout
    assert not is_locked(tmp_path)
    assert (tmp_path / LOCK_FILE).exists()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
