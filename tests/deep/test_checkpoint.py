"""Atomic checkpoint writes, clear load errors, rebuilding models, RNG state round trips."""

import errno
import os
import random

import numpy as np
import pytest
import torch

from deep.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from deep.models import CheckpointMismatchError, build_model


def _model():
    torch.manual_seed(0)
    return build_model("small-cnn", 4, in_channels=1, mean=[0.3], std=[0.2], image_size=8)


def test_save_atomic_round_trip_and_no_temp_files(tmp_path):
    model = _model()
    path = tmp_path / "sub" / "ckpt.pt"
    state = {"model_config": model.model_config, "model": model.state_dict(), "epoch": 3}
    save_atomic(state, path)
    save_atomic({**state, "epoch": 4}, path)  # overwrite
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 4
    assert loaded["model_config"] == model.model_config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["model"][k], v)


def test_atomic_files_get_the_usual_mode(tmp_path):
    """Checkpoints and result files are as readable as any other file (0644 under umask 022),
    not the 0600 of a temporary file."""
    import os
    import stat

    from deep.results import atomic_write_text

    umask = os.umask(0o022)
    try:
        save_atomic({"x": torch.zeros(1)}, tmp_path / "a.pt")
        atomic_write_text(tmp_path / "b.json", "{}")
        os.umask(0o077)
        save_atomic({"x": torch.zeros(1)}, tmp_path / "c.pt")  # a stricter umask is respected
    finally:
        os.umask(umask)
    modes = [stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("a.pt", "b.json", "c.pt")]
    assert modes == [0o644, 0o644, 0o600]


def test_failed_save_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_atomic({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"epoch": 2, "bad": Unpicklable()}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    assert load_checkpoint(path)["epoch"] == 1


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a full disk)")
def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    """The bytes go to /dev/full, a device whose every write fails with ENOSPC as a full disk's
    does (and names no file): the error names the file being written, the old file stays whole."""
    from deep.results import atomic_write_text

    path, text = tmp_path / "last.pt", tmp_path / "final.json"
    save_atomic({"epoch": 1}, path)
    text.write_text("{}")
    real_fdopen = os.fdopen

    def onto_a_full_disk(fd, mode, **kwargs):
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), mode, **kwargs)

    monkeypatch.setattr(os, "fdopen", onto_a_full_disk)
    for write, target in ((lambda: save_atomic({"epoch": 2}, path), path),
                          (lambda: atomic_write_text(text, "x" * 100_000), text)):  # fmt: skip
        with pytest.raises(OSError) as failed:
            write()
        assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(target)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json", "last.pt"]
    assert load_checkpoint(path)["epoch"] == 1 and text.read_text() == "{}"


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_checkpoint(path)


def test_garbage_file_names_it(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a torch file at all" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt is not a torch file"):
        load_checkpoint(path)
    json_file = tmp_path / "config.json"  # a run folder's other files are not taken for one
    json_file.write_text('{"method": "faal-at"}')
    with pytest.raises(CheckpointError, match="config.json is not a torch file") as exc:
        load_checkpoint(json_file)
    assert "trusted" not in str(exc.value)


def test_truncated_file_names_it(tmp_path):
    path = tmp_path / "whole.pt"
    save_atomic({"model": _model().state_dict()}, path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        broken = tmp_path / f"cut{cut}.pt"
        broken.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cut{cut}.pt"):
            load_checkpoint(broken)


def test_non_dict_and_unsafe_objects(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="tensor.pt.*expected a dict"):
        load_checkpoint(path)
    unsafe = tmp_path / "numpy.pt"
    torch.save({"rng": np.random.default_rng(0).bit_generator.state, "a": np.zeros(2)}, unsafe)
    with pytest.raises(CheckpointError, match="numpy.pt.*trusted=True"):
        load_checkpoint(unsafe)
    assert np.array_equal(load_checkpoint(unsafe, trusted=True)["a"], np.zeros(2))


def test_model_from_checkpoint_rebuilds_same_function(tmp_path):
    model = _model().eval()
    path = tmp_path / "m.pt"
    save_atomic({"model_config": model.model_config, "model": model.state_dict()}, path)
    rebuilt, ckpt = model_from_checkpoint(path)
    assert not rebuilt.training
    assert rebuilt.model_config == model.model_config
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert set(ckpt) == {"model_config", "model"}


def test_model_from_raw_state_dict_needs_config(tmp_path):
    model = _model()
    raw = {"module." + k: v for k, v in model.state_dict().items()}  # as saved from DDP
    path = tmp_path / "raw.pt"
    save_atomic(raw, path)
    with pytest.raises(CheckpointError, match="raw.pt.*model_config"):
        model_from_checkpoint(path)
    rebuilt, _ = model_from_checkpoint(path, model_config=model.model_config)
    assert torch.equal(rebuilt.classifier.weight, model.classifier.weight)
    # also from an in-memory dict
    rebuilt, _ = model_from_checkpoint({"state_dict": raw, "model_config": model.model_config})
    assert torch.equal(rebuilt.classifier.weight, model.classifier.weight)


def test_model_from_checkpoint_mismatch_names_file_and_keys(tmp_path):
    model = _model()
    path = tmp_path / "wrong.pt"
    config = {**model.model_config, "num_classes": 7}
    save_atomic({"model_config": config, "model": model.state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match=r"wrong\.pt.*classifier\.weight"):
        model_from_checkpoint(path)


def test_model_from_checkpoint_without_weights(tmp_path):
    path = tmp_path / "empty.pt"
    save_atomic({"epoch": 1, "model_config": _model().model_config}, path)
    with pytest.raises(CheckpointError, match="empty.pt.*no model weights"):
        model_from_checkpoint(path)


def test_rng_state_round_trip_through_safe_load(tmp_path):
    path = tmp_path / "rng.pt"
    random.seed(5)
    np.random.seed(6)  # noqa: NPY002 (the global generators are what is saved)
    torch.manual_seed(7)
    np.random.standard_normal()  # noqa: NPY002 (leaves a cached gaussian in the state)
    save_atomic({"rng": rng_state()}, path)
    expected = (random.random(), np.random.random(3), torch.rand(3))  # noqa: NPY002
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002
    torch.manual_seed(0)
    set_rng_state(load_checkpoint(path)["rng"])  # weights_only=True load
    got = (random.random(), np.random.random(3), torch.rand(3))  # noqa: NPY002
    assert got[0] == expected[0]
    assert np.array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])


def test_set_rng_state_rejects_malformed():
    with pytest.raises(CheckpointError, match="RNG state"):
        set_rng_state({"python": random.getstate()})


# --------------------------------------------------------------------------------------------
# Integrity digest
# --------------------------------------------------------------------------------------------
def test_every_changed_byte_of_a_checkpoint_is_refused(tmp_path):
    """Whatever byte changes (zip headers, pickle, tensor data, the digest itself), loading fails
    with a CheckpointError naming the file, never returns data."""
    path = tmp_path / "small.pt"
    save_atomic({"epoch": 3, "x": torch.arange(40, dtype=torch.float32)}, path)
    data = path.read_bytes()
    assert load_checkpoint(path)["epoch"] == 3
    flipped = tmp_path / "flip.pt"
    flipped.write_bytes(data)
    with flipped.open("r+b") as f:  # one byte changed at a time, in place
        for i in range(len(data)):
            f.seek(i)
            f.write(bytes([data[i] ^ (0x01 if i % 2 else 0x80)]))
            f.flush()
            with pytest.raises(CheckpointError, match="flip.pt"):
                load_checkpoint(flipped)
            f.seek(i)
            f.write(data[i : i + 1])


def test_overwritten_block_in_a_model_checkpoint_is_refused_with_one_line(tmp_path):
    model = _model()
    path = tmp_path / "best.pt"
    save_atomic({"model_config": model.model_config, "model": model.state_dict()}, path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="best.pt has changed since it was written") as exc:
        model_from_checkpoint(path)
    assert "\n" not in str(exc.value)


def test_digest_is_the_sha256_of_the_file_before_it(tmp_path):
    """Independent check of the format: the file ends with the prefix and the SHA-256 hex digest of
    every byte before it; torch.load reads the file as usual (the digest is a zip comment)."""
    import hashlib
    import zipfile

    path = tmp_path / "c.pt"
    save_atomic({"a": torch.ones(3)}, path)
    data = path.read_bytes()
    prefix = b"robust-fairness sha256 "
    digest = data[-64:].decode("ascii")
    assert data[-64 - len(prefix) : -64] == prefix
    assert hashlib.sha256(data[: -64 - len(prefix)]).hexdigest() == digest
    assert zipfile.ZipFile(path).comment == prefix + digest.encode("ascii")
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert set(load_checkpoint(path)) == {"a"}  # the integrity marker is not handed on


def test_checkpoint_without_digest_loads_with_one_note(tmp_path, capsys):
    model = _model()
    path = tmp_path / "old.pt"
    torch.save({"model_config": model.model_config, "model": model.state_dict()}, path)
    rebuilt, _ = model_from_checkpoint(path)
    load_checkpoint(path)  # noted once per file
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "old.pt has no integrity digest" in err
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v)
