"""Tests of downloading datasets: checksums, mirrors, transport errors, and extraction that
never deletes user data."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from data_formats import (
    check_cifar,
    write_cifar_tar,
    write_fmnist,
)
from mwt.data import download as dl
from mwt.data import (
    load_dataset,
    loaders,
)
from mwt.data.readers import read_cifar, read_idx
from mwt.errors import DatasetNotFoundError, MwtError

pytestmark = pytest.mark.usefixtures("isolated_data")


# ------------------------------------------------------------------------------------- download


@pytest.fixture
def http_dir(tmp_path):
    """Serve a directory on 127.0.0.1; yields (directory, base_url)."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_cifar10_then_load(tmp_path, http_dir):
    root, url = http_dir
    expected = write_cifar_tar(root / "cifar-10-python.tar.gz", "cifar10")
    target = tmp_path / "data"
    out = dl.download("cifar10", target, base_url=url, check_md5=False, progress=False)
    assert out == target
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py"]  # archive removed
    check_cifar(load_dataset("cifar10", "test", data_dir=target), expected["test"], "cifar10")


def test_download_checksums_checked(tmp_path, http_dir, monkeypatch):
    root, url = http_dir
    write_cifar_tar(root / "cifar-10-python.tar.gz", "cifar10")
    raw = (root / "cifar-10-python.tar.gz").read_bytes()
    size, sha, md5 = len(raw), hashlib.sha256(raw).hexdigest(), hashlib.md5(raw).hexdigest()
    target = tmp_path / "data"

    def official(entry):
        files = {s: [entry] for s in ("train", "test")}
        monkeypatch.setitem(dl.SOURCES, "cifar10", {**dl.SOURCES["cifar10"], "files": files})

    # The real table: our tiny archive is not the official file.
    with pytest.raises(MwtError, match="instead of the official 170498071"):
        dl.download("cifar10", target, base_url=url, progress=False)
    assert list(target.iterdir()) == []  # no partial or temporary file left
    # Right size, wrong SHA-256 / MD5: refused, each with the official value in the message.
    official(dl.OfficialFile("cifar-10-python.tar.gz", "0" * 64, size, md5))
    with pytest.raises(MwtError, match="SHA-256 " + sha + " instead of the official 0000"):
        dl.download("cifar10", target, base_url=url, progress=False)
    official(dl.OfficialFile("cifar-10-python.tar.gz", sha, size, "f" * 32))
    with pytest.raises(MwtError, match="MD5 " + md5):
        dl.download("cifar10", target, base_url=url, progress=False)
    assert list(target.iterdir()) == []
    # An old-style (name, md5) entry is still understood.
    official(("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"))
    with pytest.raises(MwtError, match="MD5"):
        dl.download("cifar10", target, base_url=url, progress=False)
    # verify=False (or its older name check_md5=False) skips the comparison...
    dl.download("cifar10", target, base_url=url, progress=False, check_md5=False)
    assert (target / "cifar-10-batches-py" / "data_batch_5").is_file()
    # ...and contradicting the two is an error.
    with pytest.raises(MwtError, match="verify and check_md5"):
        dl.download("cifar10", target, base_url=url, verify=False, check_md5=True)
    # With the right size and checksums the file is accepted.
    other = tmp_path / "other"
    official(dl.OfficialFile("cifar-10-python.tar.gz", sha, size, md5))
    dl.download("cifar10", other, base_url=url, progress=False)
    assert (other / "cifar-10-batches-py" / "data_batch_5").is_file()
    official(("cifar-10-python.tar.gz", sha))  # a (name, sha256) pair
    dl.download("cifar10", tmp_path / "third", base_url=url, progress=False)
    assert sorted(p.name for p in (tmp_path / "third").iterdir()) == ["cifar-10-batches-py"]


def test_load_dataset_download_flag(tmp_path, http_dir, monkeypatch):
    root, url = http_dir
    write_fmnist(root)
    monkeypatch.setattr(loaders, "_download", functools.partial(
        dl.download, base_url=url, check_md5=False, progress=False))
    target = tmp_path / "fm"
    with pytest.raises(DatasetNotFoundError):
        load_dataset("fashion-mnist", "test", data_dir=target)
    d = load_dataset("fashion-mnist", "test", data_dir=target, download=True)
    assert len(d) == 10
    assert sorted(p.name for p in target.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # only the split asked for


def test_download_http_error(tmp_path, http_dir):
    _, url = http_dir
    target = tmp_path / "data"
    with pytest.raises(MwtError, match="could not download") as info:
        dl.download("svhn", target, splits=["test"], base_url=url, progress=False)
    assert "test_32x32.mat" in str(info.value)
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("bad", ["../evil", "/abs/evil", "a/../../evil", "link"])
def test_safe_extract_rejects(tmp_path, bad):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        ok = tarfile.TarInfo("good/file")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(bad)
        if bad == "link":
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
    target = tmp_path / "out" / "inner"
    with pytest.raises(MwtError, match="refused to extract"):
        dl.safe_extract(archive, target)
    assert list(target.iterdir()) == []  # nothing extracted, not even the good member
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()


# ----------------------------------------------------------- extraction never deletes user data


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def _user_folder(target: Path, name: str = "cifar-10-batches-py") -> Path:
    folder = target / name
    folder.mkdir(parents=True)
    (folder / "my-notes.txt").write_text("precious")
    return folder


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_safe_extract_keeps_existing_folder(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"cifar-10-batches-py/data_batch_1": b"new"})
    target = tmp_path / "out"
    _user_folder(target)
    before = _tree(target)
    for expected in ("cifar-10-batches-py", None):
        with pytest.raises(MwtError, match="already exists") as info:
            dl.safe_extract(archive, target, expected=expected)
        assert str(target / "cifar-10-batches-py") in str(info.value)
        assert _tree(target) == before  # sentinel kept, nothing added, no staging dir left
    assert (target / "cifar-10-batches-py" / "my-notes.txt").read_text() == "precious"


def test_safe_extract_moves_only_the_expected_folder(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {
        "cifar-10-batches-py/data_batch_1": b"one",
        "cifar-10-batches-py/sub/x": b"x",
        "other/file": b"other",
        "README": b"readme",
    })
    target = tmp_path / "out"
    _user_folder(target, "other")  # a same-named folder of another top-level entry
    created = dl.safe_extract(archive, target, expected="cifar-10-batches-py")
    assert created == [target / "cifar-10-batches-py"]
    assert _tree(target) == ["cifar-10-batches-py", "cifar-10-batches-py/data_batch_1",
                             "cifar-10-batches-py/sub", "cifar-10-batches-py/sub/x", "other",
                             "other/my-notes.txt"]
    assert (target / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"one"
    # An archive without the expected folder is refused; a bad name too.
    with pytest.raises(MwtError, match="does not contain cifar-100-python"):
        dl.safe_extract(archive, tmp_path / "o2", expected="cifar-100-python")
    assert list((tmp_path / "o2").iterdir()) == []
    for bad in ("", "..", "a/b"):
        with pytest.raises(MwtError, match="plain file or folder name"):
            dl.safe_extract(archive, tmp_path / "o3", expected=bad)


def test_safe_extract_without_expected_is_all_or_nothing(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"a/x": b"a", "b/y": b"b"})
    target = tmp_path / "out"
    _user_folder(target, "b")
    with pytest.raises(MwtError, match="already exists"):
        dl.safe_extract(archive, target)
    assert _tree(target) == ["b", "b/my-notes.txt"]  # "a" was not moved either
    assert dl.safe_extract(archive, tmp_path / "fresh") == [tmp_path / "fresh" / "a",
                                                           tmp_path / "fresh" / "b"]


def test_download_force_never_deletes_user_folder(tmp_path, http_dir):
    root, url = http_dir
    write_cifar_tar(root / "cifar-10-python.tar.gz", "cifar10")
    target = tmp_path / "data"
    _user_folder(target)
    # The user's own copy of the archive under the official name is never touched either.
    (target / "cifar-10-python.tar.gz").write_bytes(b"the user's file")
    before = _tree(target)
    with pytest.raises(MwtError, match="already exists"):
        dl.download("cifar10", target, base_url=url, verify=False, force=True, progress=False)
    assert _tree(target) == before
    assert (target / "cifar-10-batches-py" / "my-notes.txt").read_text() == "precious"
    # Without force the existing folder is taken as the download (nothing fetched).
    assert dl.download("cifar10", target, base_url=url, verify=False, progress=False) == target
    assert _tree(target) == before
    # Once the user moved it away, the download goes through beside their archive.
    (target / "cifar-10-batches-py").rename(tmp_path / "moved")
    dl.download("cifar10", target, base_url=url, verify=False, force=True, progress=False)
    assert (target / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert (target / "cifar-10-python.tar.gz").read_bytes() == b"the user's file"
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py",
                                                        "cifar-10-python.tar.gz"]


def test_corrupted_archive_stream_is_error(tmp_path):
    # A .tar.gz whose deflate data breaks mid-stream: zlib.error, not a traceback.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("batches.meta", "test_batch"):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = 5000
            tf.addfile(info, io.BytesIO(b"x" * 5000))
    raw = buf.getvalue()
    broken = bytearray(gzip.compress(raw[1024:], mtime=0))
    broken[10] = 0x07  # deflate block type 3 does not exist
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(gzip.compress(raw[:1024], mtime=0) + bytes(broken))
    with pytest.raises(MwtError, match="not a readable tar archive") as info:
        read_cifar(archive, "cifar10", "test")
    assert isinstance(info.value.__cause__, zlib.error)
    with pytest.raises(MwtError, match="could not extract") as info:
        dl.safe_extract(archive, tmp_path / "out", expected="cifar-10-batches-py")
    assert isinstance(info.value.__cause__, zlib.error)
    assert list((tmp_path / "out").iterdir()) == []


# ------------------------------------------------------------------ official sources, transport


def test_sources_pin_sha256_and_size():
    for name, source in dl.SOURCES.items():
        for split, entries in source["files"].items():
            for entry in entries:
                assert isinstance(entry, dl.OfficialFile), (name, split)
                assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0, entry
                assert len(entry.md5) == 32 and isinstance(entry.size, int), entry
    assert dl.SOURCES["fashion-mnist"]["base_url"].startswith("https://")
    assert dl.SOURCES["cifar10"]["base_url"].startswith("https://")
    assert dl.SOURCES["cifar100"]["base_url"].startswith("https://")
    assert (dl.SOURCES["cifar10"]["files"]["train"][0].sha256
            == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_falls_back_when_a_server_is_down(tmp_path, http_dir, monkeypatch):
    root, url = http_dir
    expected = write_fmnist(root)
    down = _closed_port_url()
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", {
        **dl.SOURCES["fashion-mnist"], "base_url": down, "fallback_urls": [url]})
    target = tmp_path / "fm"
    dl.download("fashion-mnist", target, splits="test", verify=False, progress=False)
    assert sorted(p.name for p in target.iterdir()) == [  # a single split given as a string
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    np.testing.assert_array_equal(read_idx(target / "t10k-labels-idx1-ubyte.gz"),
                                  expected["t10k"][1])
    # When no server answers the error names them all.
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", {
        **dl.SOURCES["fashion-mnist"], "base_url": down, "fallback_urls": [down + "x/"]})
    with pytest.raises(MwtError, match="from any server") as info:
        dl.download("fashion-mnist", tmp_path / "fm2", splits=["train"], progress=False)
    assert down + "train-images" in str(info.value) and down + "x/train" in str(info.value)
    assert list((tmp_path / "fm2").iterdir()) == []


@pytest.mark.parametrize("chunked", [False, True])
def test_download_cut_short_is_error(tmp_path, chunked):
    class Liar(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            if chunked:  # a chunk announced as 0x10000 bytes, of which 14 arrive
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"10000\r\nonly this much")
            else:
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"only this much")
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(MwtError) as info:
            dl.download("svhn", tmp_path / "s", splits="test", base_url=url, progress=False)
        want = "before the whole file arrived" if chunked else "stopped after 14 of 100000"
        assert want in str(info.value)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert list((tmp_path / "s").iterdir()) == []


def test_download_bad_split_names(tmp_path):
    with pytest.raises(MwtError, match="unknown split 'validation'"):
        dl.download("svhn", tmp_path, splits="validation", progress=False)
    with pytest.raises(MwtError, match="cannot be downloaded"):
        dl.download("demo", tmp_path, progress=False)
    # A download directory that cannot be written into (here: gone) is a one-line error.
    with pytest.raises(MwtError, match="cannot write into the download directory"):
        dl._fetch("http://127.0.0.1:9/x", tmp_path / "gone" / "x", None, False, 1.0)
