"""deep.data.download_dataset against a local HTTP server: checksums, atomicity, unpacking."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest
import torch

import deep.data as data
from deep.data import DatasetError, RemoteFile, download_dataset, load_dataset
from tests.deep import fake_datasets as fake

ARCHIVE = "cifar-10-python.tar.gz"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[name]``; names in ``server.truncate`` get a short body."""

    def do_GET(self):  # noqa: N802
        name = self.path.lstrip("/")
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.server.truncate:
            body = body[: len(body) // 2]  # the connection drops half way
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.truncate = {}, set()
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _cifar_archive(tmp_path: Path, folder: str = "cifar-10-batches-py"):
    src = tmp_path / "src"
    written = fake.write_cifar10(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname=folder)
    return buf.getvalue(), written


def _md5(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


def test_download_verifies_checksum_and_unpacks(tmp_path, server):
    archive, ((x_tr, y_tr), _) = _cifar_archive(tmp_path)
    server.files[ARCHIVE] = archive
    target = tmp_path / "data"
    download_dataset("cifar10", target, url_base=server.url, checksums={ARCHIVE: _md5(archive)})
    assert {p.name for p in target.iterdir()} == {ARCHIVE, "cifar-10-batches-py"}
    assert (target / ARCHIVE).read_bytes() == archive
    ds = load_dataset("cifar10", target)
    assert torch.equal(ds.train.x, torch.from_numpy(x_tr))
    assert torch.equal(ds.train.y, torch.from_numpy(y_tr))
    # a second call finds the unpacked folder and fetches nothing
    server.files.clear()
    download_dataset("cifar10", target, url_base=server.url, checksums={ARCHIVE: _md5(archive)})


def test_bad_checksum_leaves_nothing(tmp_path, server):
    archive, _ = _cifar_archive(tmp_path)
    server.files[ARCHIVE] = archive
    target = tmp_path / "data"
    with pytest.raises(DatasetError, match="checksum mismatch") as err:
        download_dataset("cifar10", target, url_base=server.url, checksums={ARCHIVE: "0" * 32})
    assert _md5(archive) in str(err.value) and ARCHIVE in str(err.value)
    assert list(target.iterdir()) == []


def test_interrupted_download_leaves_nothing(tmp_path, server):
    archive, _ = _cifar_archive(tmp_path)
    server.files[ARCHIVE] = archive
    server.truncate.add(ARCHIVE)
    target = tmp_path / "data"
    with pytest.raises(DatasetError, match=ARCHIVE):
        download_dataset("cifar10", target, url_base=server.url, checksums={ARCHIVE: _md5(archive)})
    assert list(target.iterdir()) == []


def test_http_error_and_bad_archive_leave_nothing(tmp_path, server):
    target = tmp_path / "data"
    with pytest.raises(DatasetError, match="404"):
        download_dataset("cifar10", target, url_base=server.url)
    assert list(target.iterdir()) == []
    # a verified archive without the expected top-level folder: no folder appears
    archive, _ = _cifar_archive(tmp_path, folder="something-else")
    server.files[ARCHIVE] = archive
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        download_dataset("cifar10", target, url_base=server.url, checksums={ARCHIVE: _md5(archive)})
    assert sorted(p.name for p in target.iterdir()) == [ARCHIVE]


def test_archive_escaping_the_folder_is_refused(tmp_path, server):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    archive = buf.getvalue()
    server.files[ARCHIVE] = archive
    target = tmp_path / "data"
    with pytest.raises(DatasetError, match="cannot unpack"):
        download_dataset("cifar10", target, url_base=server.url, checksums={ARCHIVE: _md5(archive)})
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == [ARCHIVE]


def test_plain_files_are_fetched_and_reverified(tmp_path, server):
    (x_tr, _), _ = fake.write_svhn(tmp_path / "src")
    files = {n: (tmp_path / "src" / n).read_bytes() for n in ("train_32x32.mat", "test_32x32.mat")}
    server.files.update(files)
    sums = {n: _md5(b) for n, b in files.items()}
    target = tmp_path / "svhn"
    download_dataset("svhn", target, url_base=server.url, checksums=sums)
    assert torch.equal(load_dataset("svhn", target).train.x, torch.from_numpy(x_tr))
    # a damaged local copy fails its checksum and is replaced by a fresh download
    (target / "test_32x32.mat").write_bytes(b"damaged")
    download_dataset("svhn", target, url_base=server.url, checksums=sums)
    assert (target / "test_32x32.mat").read_bytes() == files["test_32x32.mat"]


def test_load_dataset_download_flag_fetches_missing_files(tmp_path, server, monkeypatch):
    archive, (_, (x_te, _)) = _cifar_archive(tmp_path)
    server.files[ARCHIVE] = archive
    remote = RemoteFile(f"{server.url}/{ARCHIVE}", _md5(archive), "cifar-10-batches-py")
    monkeypatch.setitem(data.SOURCES, "cifar10", (remote,))
    target = tmp_path / "data"
    with pytest.raises(data.MissingFilesError):
        load_dataset("cifar10", target)
    ds = load_dataset("cifar10", target, download=True)
    assert torch.equal(ds.test.x, torch.from_numpy(x_te))


def test_registry_holds_the_published_checksums():
    sums = {f.filename: f.md5 for files in data.SOURCES.values() for f in files}
    assert sums["cifar-10-python.tar.gz"] == "c58f30108f718f92721af3b95e74349a"
    assert sums["cifar-100-python.tar.gz"] == "eb9058c3a382ffc7106e4002c42a8d85"
    assert sums["train_32x32.mat"] == "e26dedcc434d2e4c54c9b2d4a06d8373"
    assert sums["test_32x32.mat"] == "eb5a983be6a315427106f1b164d9cef3"
    assert sums["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"
    assert sums["CIFAR-10-C.tar"] == "56bf5dcef84df0e2308c6dcbcbbd8499"
    assert data.SOURCES["digits"] == ()
    with pytest.raises(ValueError, match="dataset name"):
        download_dataset("imagenet", "unused")


def test_evaluate_cli_download_flag_fetches_missing_files(tmp_path, server, monkeypatch, capsys):
    from deep.checkpoint import save_atomic
    from deep.evaluate import main as evaluate_main
    from deep.models import build_model

    archive, _ = _cifar_archive(tmp_path)
    server.files[ARCHIVE] = archive
    remote = RemoteFile(f"{server.url}/{ARCHIVE}", _md5(archive), "cifar-10-batches-py")
    monkeypatch.setitem(data.SOURCES, "cifar10", (remote,))
    model = build_model("small-cnn", 10, in_channels=3, image_size=32)
    ckpt = tmp_path / "model.pt"
    save_atomic({"model_config": model.model_config, "model": model.state_dict()}, ckpt)
    target, out = tmp_path / "data", tmp_path / "out"
    argv = ["--checkpoint", str(ckpt), "--dataset", "cifar10", "--data-dir", str(target)]
    argv += ["--attacks", "clean", "--out", str(out), "--quiet", "--device", "cpu"]
    with pytest.raises(SystemExit) as missing:
        evaluate_main(argv)
    assert missing.value.code == 2 and "--download" in capsys.readouterr().err
    evaluate_main([*argv, "--download"])
    assert (target / "cifar-10-batches-py" / "test_batch").is_file()
    assert (out / "final.json").is_file()


def test_train_cli_download_flag_fetches_missing_files(tmp_path, server, monkeypatch):
    from deep.train import main as train_main

    archive, _ = _cifar_archive(tmp_path)
    server.files[ARCHIVE] = archive
    remote = RemoteFile(f"{server.url}/{ARCHIVE}", _md5(archive), "cifar-10-batches-py")
    monkeypatch.setitem(data.SOURCES, "cifar10", (remote,))
    target, out = tmp_path / "data", tmp_path / "run"
    argv = ["--dataset", "cifar10", "--data-dir", str(target), "--model", "small-cnn"]
    argv += ["--method", "pgd-at", "--epochs", "1", "--batch-size", "50", "--attack-steps", "1"]
    argv += ["--val-per-class", "0", "--final-attacks", "clean", "--out", str(out), "--quiet"]
    with pytest.raises(SystemExit) as missing:
        train_main(argv)
    assert missing.value.code == 2
    assert train_main([*argv, "--download"]) == 0
    assert (target / "cifar-10-batches-py" / "data_batch_1").is_file()
    assert (out / "final.json").is_file()
