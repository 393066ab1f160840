"""Checkpoints are written atomically: a failed write leaves the previous state intact."""

import os
import stat

import pytest
import torch

from resnest_dense.checkpoint import Checkpointer


class _Boom(RuntimeError):
    pass


def test_save_and_resume(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt = Checkpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    other = torch.nn.Linear(3, 2)
    loaded = Checkpointer(other, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert loaded["iteration"] == 9
    torch.testing.assert_close(other.weight, model.weight)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")]


def test_interrupted_write_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = Checkpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_0000004", iteration=4)
    good = (tmp_path / "model_0000004.pth").read_bytes()

    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)  # half-written file, then the process "dies"
        raise _Boom("killed during write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(_Boom):
        ckpt.save("model_0000009", iteration=9)
    monkeypatch.setattr(torch, "save", real_save)

    assert not (tmp_path / "model_0000009.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert (tmp_path / "model_0000004.pth").read_bytes() == good
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")]
    loaded = Checkpointer(torch.nn.Linear(3, 2), save_dir=str(tmp_path))
    assert loaded.resume_or_load("", resume=True)["iteration"] == 4


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_get_ordinary_file_permissions(tmp_path, umask):
    from resnest_dense.utils.io import atomic_write_json

    old = os.umask(umask)
    try:
        path = atomic_write_json(str(tmp_path / "results.json"), {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
