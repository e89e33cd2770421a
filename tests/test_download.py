"""Downloads against a local HTTP server on 127.0.0.1: verify, reject, resume."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

import bench.datasets.download as download
from bench.cli import app
from bench.datasets.download import RemoteFile, Source, fetch
from bench.datasets.files import DatasetFileError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA256 = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
SIZE = len(PAYLOAD)


class FileServer:
    """Serves ``files`` with Range support; ``cut[name] = n`` drops the first full response
    after n bytes, as a broken connection would."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.cut, self.ranges = files, {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    server.ranges.append(start)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if start == 0 and name in server.cut:
                    self.wfile.write(data[: server.cut.pop(name)])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the connection breaks mid-file
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    files = {"good.bin": PAYLOAD, "corrupt.bin": b"x" + PAYLOAD[1:], "short.bin": PAYLOAD[:1000]}
    with FileServer(files) as running:
        yield running


def remote(server, name, known_hash=SHA256, size=SIZE):
    return RemoteFile(name, server.url(name), known_hash, size)


def test_a_good_file_downloads_and_verifies(server, tmp_path):
    path = fetch(remote(server, "good.bin"), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["good.bin"]
    fetch(remote(server, "good.bin"), tmp_path, progress=False)  # present and verified: no refetch


@pytest.mark.parametrize("name", ["corrupt.bin", "short.bin"])
def test_corrupt_and_truncated_files_are_rejected_and_removed(server, tmp_path, name):
    with pytest.raises(DatasetFileError) as error:
        fetch(remote(server, name), tmp_path, progress=False)
    assert name in str(error.value) and "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_file_without_a_published_hash_is_checked_by_size(server, tmp_path):
    with pytest.raises(DatasetFileError, match="expected 1,048,576 bytes"):
        fetch(remote(server, "short.bin", known_hash=None), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_file_checked_by_its_sha256_prefix(server, tmp_path):
    """As the FID Inception weights are: the name carries the first digits of the sha256."""
    prefix = SHA256.split(":")[1][:8]
    good = RemoteFile("good.bin", server.url("good.bin"), None, sha256_prefix=prefix)
    assert fetch(good, tmp_path, progress=False).read_bytes() == PAYLOAD
    other = RemoteFile("corrupt.bin", server.url("corrupt.bin"), None, sha256_prefix=prefix)
    with pytest.raises(DatasetFileError, match=f"does not start with {prefix}"):
        fetch(other, tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["good.bin"]
    weights = download.SOURCES["fid-inception"].files[0]
    assert weights.sha256_prefix == weights.name.rsplit("-", 1)[1].split(".")[0]


def test_an_interrupted_download_resumes(server, tmp_path):
    server.cut["good.bin"] = 300_000
    with pytest.raises(DatasetFileError, match="run the same command again to resume"):
        fetch(remote(server, "good.bin"), tmp_path, progress=False)
    assert not (tmp_path / "good.bin").exists()
    kept = (tmp_path / "good.bin.part").stat().st_size
    assert 0 < kept < len(PAYLOAD)
    path = fetch(remote(server, "good.bin"), tmp_path, progress=False)
    assert server.ranges == [kept]  # asked only for the rest
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "good.bin.part").exists()


def test_no_network_is_said_as_such_not_as_an_interruption(tmp_path):
    import socket

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    unreachable = RemoteFile("good.bin", f"http://127.0.0.1:{port}/good.bin", SHA256, SIZE)
    with pytest.raises(DatasetFileError) as error:
        fetch(unreachable, tmp_path, progress=False)
    assert str(error.value) == (
        f"good.bin: cannot reach 127.0.0.1:{port} (ConnectionError); check the network, or "
        "set BENCH_DATA_MIRROR to the base URL of a mirror holding the file"
    )


def test_a_near_miss_dataset_name_gets_a_suggestion(tmp_path):
    with pytest.raises(DatasetFileError, match=r"did you mean mpi3d-toy or mpi3d-realistic or "):
        download.source("mpi3d")
    with pytest.raises(DatasetFileError, match=r"did you mean shapes3d\?"):
        download.source("shapes3D")


def test_bench_data_download_ls_verify(server, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    toy = Source("toy", (remote(server, "good.bin"),), loader_path="good.bin")
    monkeypatch.setitem(download.SOURCES, "toy", toy)
    runner = CliRunner()
    listing = runner.invoke(app, ["data", "ls"])
    assert listing.exit_code == 0 and "toy" in listing.output and "missing" in listing.output
    result = runner.invoke(app, ["data", "download", "toy"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "toy" / "good.bin").read_bytes() == PAYLOAD
    assert "present" in runner.invoke(app, ["data", "ls"]).output
    verified = runner.invoke(app, ["data", "verify", "toy"])
    assert verified.exit_code == 0 and "good.bin: ok" in verified.output
    (tmp_path / "toy" / "good.bin").write_bytes(b"tampered")
    tampered = runner.invoke(app, ["data", "verify", "toy"])
    assert tampered.exit_code == 1 and "MISMATCH" in tampered.output


def test_manual_datasets_say_how(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetFileError, match="cannot be fetched automatically"):
        download.download("celeba")
    with pytest.raises(DatasetFileError, match="downloadable datasets: dsprites, shapes3d"):
        download.download("nope")


def test_cars3d_archive_downloads_extracts_and_loads(tmp_path, monkeypatch):
    import io
    import tarfile

    import numpy as np
    import scipy.io

    from bench.datasets.cars3d import Cars3D

    mat = io.BytesIO()
    scipy.io.savemat(mat, {"im": np.zeros((128, 128, 3, 24, 4), np.uint8)})
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, content in (
            ("data/cars/list.txt", b"car_001_mesh\n"),
            ("data/cars/car_001_mesh.mat", mat.getvalue()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    payload = archive.getvalue()
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    with FileServer({"cars.tar.gz": payload}) as running:
        md5 = "md5:" + hashlib.md5(payload).hexdigest()
        source = download.SOURCES["cars3d"]
        patched = Source(
            source.folder,
            (RemoteFile("cars.tar.gz", running.url("cars.tar.gz"), md5),),
            extract=True,
            loader_path=source.loader_path,
        )
        monkeypatch.setitem(download.SOURCES, "cars3d", patched)
        path = download.download("cars3d", progress=False)
    data = Cars3D()  # the loader's default path is where the download put it
    assert path == tmp_path / "data" / "cars3d" / "data" / "cars"
    assert data.factors_num_values == (4, 24, 1)
