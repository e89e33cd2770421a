"""Fetch the official dataset files into ``$BENCH_DATA``: checksummed, resumable, atomic.

Each file is downloaded through pooch into ``<name>.part`` (an interrupted download resumes
from there with an HTTP Range request), checked against its published hash, and only then
renamed into place: a corrupt or truncated file is deleted, never left where a loader reads.
Where no hash is published, the size is checked when known, and the sha256 of what was
downloaded is recorded in ``download.json`` so that ``bench data verify`` can re-check it.

``$BENCH_DATA_MIRROR`` (a base URL) replaces every file's host and folder, for a local mirror.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.datasets.celeba import MANUAL as CELEBA_MANUAL
from bench.datasets.dsprites import HDF5_NAME as DSPRITES_FILE
from bench.datasets.files import DatasetFileError, data_dir
from bench.datasets.shapes3d import FILE_NAME as SHAPES3D_FILE
from bench.datasets.smallnorb import SPLITS as NORB_SPLITS
from bench.datasets.smallnorb import file_name as norb_file_name
from bench.fileio import atomic_write_json


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str | None  # None: the file is fetched by hand (see Source.manual)
    known_hash: str | None  # "sha256:…" or "md5:…"; None where nothing is published
    size: int | None = None
    # Where only the first digits of the sha256 are published (torch.hub's convention: the
    # file name carries them), those digits.
    sha256_prefix: str | None = None


def remote(url: str, known_hash: str | None, size: int | None = None) -> RemoteFile:
    return RemoteFile(url.rsplit("/", 1)[-1], url, known_hash, size)


@dataclass(frozen=True)
class Source:
    folder: str  # below the data dir
    files: tuple[RemoteFile, ...]
    extract: bool = False  # a tar.gz to unpack in place
    manual: str | None = None  # set when the files cannot be fetched automatically
    loader_path: str = ""  # what the loader reads, relative to the folder ("" = the folder)


_MPI3D = "https://storage.googleapis.com/disentanglement_dataset/Final_Dataset/mpi3d_{}.npz"
_MPI3D_MD5 = {
    "toy": "55889cb7c7dfc655d6e0277beee88868",
    "realistic": "59a6225b88b635365f70c91b3e52f70f",
    "real": "0f33f609918fb5c97996692f91129802",
}
# The Inception weights FID is defined with (TensorFlow's 2015-12-05 graph, as pytorch-fid
# ports it); torch.hub's convention: the name carries the first digits of the sha256.
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_INCEPTION_SHA256_PREFIX = "6726825d"
_FID_INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
# The perceptual loss of the VQ first stages (LPIPS v0.1 on VGG16): torchvision's ImageNet
# VGG16 (torch.hub's name carries its sha256 prefix) and LPIPS' linear heads (sha256 of the
# file as the lpips package ships it).
VGG16_FILE = "vgg16-397923af.pth"
VGG16_SHA256_PREFIX = "397923af"
LPIPS_HEADS_FILE = "vgg.pth"
_VGG16_URL = "https://download.pytorch.org/models/" + VGG16_FILE
_LPIPS_HEADS_URL = (
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
)
_LPIPS_HEADS_SHA256 = "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"
_NORB = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/{}.gz"
_NORB_SHA256 = {
    ("training", "dat"): "5ffd6272a07d32695ee1082a26a41a93a37aab8c28da047f8c34ed348d214873",
    ("training", "cat"): "2784e542c1922060691090952b6cd6278879a216c90f81476f0f00256d42cdaa",
    ("training", "info"): "de7eb932ebe7a4ee16217fead60660d0eb3d23632c2f4d1c51f88c501c17bf32",
    ("testing", "dat"): "cf7104eed3e51174d2f65b66d1e5878b9da233b886f161b0d88f4510ba2c7474",
    ("testing", "cat"): "ecaf6d5bb8c3bc5eab9cf0258f6d2198dd474e016e374836fc097f2e5ff509ff",
    ("testing", "info"): "16adf314226327ee006d1a44db8cfef52773c06c829951d5653a9f6f310248a2",
}
_NORB_SIZES = {
    ("training", "dat"): 131_896_188,
    ("training", "cat"): 348,
    ("training", "info"): 71_052,
    ("testing", "dat"): 130_799_817,
    ("testing", "cat"): 347,
    ("testing", "info"): 10_428,
}

SOURCES: dict[str, Source] = {
    "dsprites": Source(
        "dsprites",
        (
            remote(
                f"https://raw.githubusercontent.com/deepmind/dsprites-dataset/master/{DSPRITES_FILE}",
                "sha256:729fa22e884c9c500e1f17415d580746b4c5894fbbb780a1319bbcfa39a745bb",
                28_024_106,
            ),
        ),
        loader_path=DSPRITES_FILE,
    ),
    "shapes3d": Source(
        "shapes3d",
        (
            remote(
                f"https://storage.googleapis.com/3d-shapes/{SHAPES3D_FILE}",
                "sha256:0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785",
                267_573_662,
            ),
        ),
        loader_path=SHAPES3D_FILE,
    ),
    **{
        f"mpi3d-{variant}": Source(
            "mpi3d",
            (remote(_MPI3D.format(variant), f"md5:{md5}"),),
            loader_path=f"mpi3d_{variant}.npz",
        )
        for variant, md5 in _MPI3D_MD5.items()
    },
    "cars3d": Source(
        "cars3d",
        (
            remote(
                "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz",
                "md5:4e866a7919c1beedf53964e6f7a23686",
            ),
        ),
        extract=True,
        loader_path="data/cars",
    ),
    "smallnorb": Source(
        "smallnorb",
        tuple(
            remote(
                _NORB.format(norb_file_name(split, kind)),
                "sha256:" + _NORB_SHA256[split.rsplit("-", 1)[1], kind],
                _NORB_SIZES[split.rsplit("-", 1)[1], kind],
            )
            for split in NORB_SPLITS
            for kind in ("dat", "cat", "info")
        ),
    ),
    "celeba": Source(
        "celeba",
        (
            RemoteFile(
                "img_align_celeba.zip",
                None,
                "sha256:46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74",
                1_443_490_838,
            ),
            RemoteFile(
                "list_attr_celeba.txt",
                None,
                "sha256:f0e5da289d5ccf75ffe8811132694922b60f2af59256ed362afa03fefba324d0",
                26_721_026,
            ),
            RemoteFile(
                "list_eval_partition.txt",
                None,
                "sha256:fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7",
                2_836_386,
            ),
        ),
        manual=CELEBA_MANUAL,
    ),
    "fid-inception": Source(
        "fid-inception",
        (
            RemoteFile(
                FID_INCEPTION_FILE,
                _FID_INCEPTION_URL + FID_INCEPTION_FILE,
                None,
                sha256_prefix=FID_INCEPTION_SHA256_PREFIX,
            ),
        ),
        loader_path=FID_INCEPTION_FILE,
    ),
    "lpips": Source(
        "lpips",
        (
            RemoteFile(VGG16_FILE, _VGG16_URL, None, sha256_prefix=VGG16_SHA256_PREFIX),
            RemoteFile(LPIPS_HEADS_FILE, _LPIPS_HEADS_URL, "sha256:" + _LPIPS_HEADS_SHA256, 7289),
        ),
    ),
}


def source(name: str) -> Source:
    if name not in SOURCES:
        close = [n for n in SOURCES if n.startswith(f"{name}-")]  # mpi3d: its three variants
        close = close or difflib.get_close_matches(name, list(SOURCES), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise DatasetFileError(
            f"no download for {name!r}{hint}; downloadable datasets: {', '.join(SOURCES)}"
        )
    return SOURCES[name]


def folder_of(name: str) -> Path:
    return data_dir() / source(name).folder


def _url(file: RemoteFile) -> str:
    mirror = os.environ.get("BENCH_DATA_MIRROR")
    return f"{mirror.rstrip('/')}/{file.name}" if mirror else str(file.url)


class ResumableDownloader:
    """A pooch downloader that keeps what it got in ``<name>.part`` and resumes from there."""

    def __init__(self, partial: Path, progress: bool) -> None:
        self.partial, self.progress = partial, progress

    def __call__(self, url: str, output_file: str, pooch: object, check_only: bool = False) -> None:
        import requests
        from tqdm import tqdm

        have = self.partial.stat().st_size if self.partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=60) as response:
            if response.status_code == 416:  # nothing left to fetch
                response.close()
            else:
                response.raise_for_status()
                resumed = response.status_code == 206
                total = int(response.headers.get("Content-Length", 0)) + (have if resumed else 0)
                mode = "ab" if resumed else "wb"
                bar = tqdm(
                    total=total or None,
                    initial=have if resumed else 0,
                    unit="B",
                    unit_scale=True,
                    desc=self.partial.name[:-5],
                    disable=not self.progress,
                )
                with self.partial.open(mode) as f, bar:
                    for chunk in response.iter_content(chunk_size=1 << 16):
                        f.write(chunk)
                        bar.update(len(chunk))
        os.replace(self.partial, output_file)  # pooch checks the hash, then renames or deletes


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(file: RemoteFile, folder: Path, progress: bool = True) -> Path:
    """Download one file into ``folder`` unless a verified copy is there; returns its path."""
    import pooch
    import requests

    target = folder / file.name
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{file.name}.part"
    downloader = ResumableDownloader(partial, progress)
    try:
        pooch.retrieve(_url(file), file.known_hash, file.name, folder, downloader=downloader)
    except ValueError as error:  # hash mismatch: pooch has deleted the file
        raise DatasetFileError(f"{file.name}: {' '.join(str(error).split())}") from None
    except requests.exceptions.RequestException as error:
        kept = partial.stat().st_size if partial.exists() else 0
        if kept == 0 and isinstance(error, requests.exceptions.ConnectionError):
            host = urlsplit(_url(file)).netloc
            raise DatasetFileError(
                f"{file.name}: cannot reach {host} ({type(error).__name__}); check the "
                "network, or set BENCH_DATA_MIRROR to the base URL of a mirror holding the file"
            ) from None
        raise DatasetFileError(
            f"{file.name}: download interrupted ({type(error).__name__}) with {kept:,} bytes "
            "kept; run the same command again to resume"
        ) from None
    if file.size is not None and target.stat().st_size != file.size:
        target.unlink()
        raise DatasetFileError(
            f"{file.name}: expected {file.size:,} bytes, found a different size; deleted it"
        )
    if file.sha256_prefix and not sha256_of(target).startswith(file.sha256_prefix):
        target.unlink()
        raise DatasetFileError(
            f"{file.name}: its sha256 does not start with {file.sha256_prefix}; deleted it"
        )
    return target


def download(name: str, progress: bool = True) -> Path:
    """Fetch every file of dataset ``name``; returns the folder its loader reads."""
    src = source(name)
    folder = folder_of(name)
    if src.manual:
        raise DatasetFileError(src.manual.format(root=folder / "img_align_celeba"))
    record = {}
    for file in src.files:
        path = fetch(file, folder, progress)
        record[file.name] = {
            "url": file.url,
            "size": path.stat().st_size,
            "sha256": sha256_of(path),
            "checked_against": file.known_hash
            or (file.sha256_prefix and f"sha256 prefix {file.sha256_prefix}")
            or "nothing published: size and sha256 recorded",
        }
        if src.extract:
            _extract(path, folder)
    atomic_write_json(folder / f"download-{name}.json", record)
    return folder / src.loader_path


def _extract(archive: Path, folder: Path) -> None:
    """Unpack a tar.gz beside itself, atomically: into a temporary folder, then renamed."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as error:
            raise DatasetFileError(f"{archive}: expected a tar.gz archive, found {error}") from None
        for item in Path(tmp).iterdir():
            destination = folder / item.name
            if destination.exists():
                shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
            os.replace(item, destination)


def verify(name: str) -> list[tuple[str, str]]:
    """(file name, verdict) for every file of ``name``: each hash checked again."""
    import pooch

    src = source(name)
    folder = folder_of(name)
    record_file = folder / f"download-{name}.json"
    recorded = json.loads(record_file.read_text()) if record_file.is_file() else {}
    verdicts = []
    for file in src.files:
        path = folder / file.name
        if not path.is_file():
            verdicts.append((file.name, f"missing (bench data download {name} fetches it)"))
        elif file.known_hash:
            ok = (
                pooch.file_hash(str(path), file.known_hash.split(":")[0])
                == (file.known_hash.split(":")[1])
            )
            verdicts.append((file.name, "ok" if ok else f"MISMATCH with {file.known_hash}"))
        elif file.sha256_prefix:
            ok = sha256_of(path).startswith(file.sha256_prefix)
            verdicts.append(
                (file.name, "ok" if ok else f"MISMATCH with sha256 prefix {file.sha256_prefix}")
            )
        elif file.name in recorded:
            ok = sha256_of(path) == recorded[file.name]["sha256"]
            verdicts.append((file.name, "ok (recorded sha256)" if ok else "CHANGED since download"))
        else:
            verdicts.append((file.name, "present; no published or recorded checksum"))
    return verdicts
