"""Downloads from hostile mirrors on 127.0.0.1: endless bodies, gzip bombs, slow drips, signals, a read-only cache.

Each test injects the fault for real (a local HTTP server that misbehaves on purpose, a
real `bpcli` subprocess, real signals, a real read-only mount) and checks the exit code,
the message's first line, and that nothing was lost: no partial or oversized file is left
in the cache, and the files cached before are intact. Nothing here reaches the internet.
Each server loop is bounded, so a test of code that ignores the fault still ends.
"""

import collections
import dataclasses
import http.server
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from bpcli.data.catalog import DATASETS
from bpcli.data.checksums import RemoteFile, sha256_bytes, verify
from bpcli.data.download import fetch
from bpcli.data.idx import read_idx
from bpcli.errors import CheckpointError, DataError
from tests.idx_files import encode_idx
from tests.test_download import MINI, T10K_IMAGES, T10K_LABELS, Server, no_proxy  # noqa: F401 (autouse fixture)

TIMEOUT = 0.5                 # the client's timeout in these tests (BPCLI_DOWNLOAD_TIMEOUT for subprocesses)
ENDLESS_LIMIT = 64 << 20      # an "endless" body stops here, so that a client that never stops still ends
DRIP_EVERY = 0.05             # a dripping mirror sends one byte this often ...
DRIP_FOR = 10.0               # ... for at most this long
LABELS = dataclasses.replace(T10K_LABELS, size=(MINI / T10K_LABELS.name).stat().st_size)
FASHION_IMAGES = DATASETS["fashion-mnist"].files[0]  # train-images, verified by its content's SHA-256
BOMB_SHAPE = (60000, 28, 28)  # what the bomb's IDX header declares: 47,040,016 bytes, like the real file
BOMB_ZEROS = 200 << 20        # what it inflates to beyond that


class Hostile(http.server.BaseHTTPRequestHandler):
    """GET /<mode>/<file name>: good, endless, announced (Content-Length 300 MiB, then endless), drip, bomb."""

    def do_GET(self):
        _, mode, name = self.path.split("/", 2)
        self.server.requests.append(self.path)
        if mode in ("endless", "announced"):
            return self.endless(announce=mode == "announced")
        data = self.server.bombs.get(name) if mode == "bomb" else self.server.files.get(name)
        if data is None and (MINI / name).is_file():
            data = (MINI / name).read_bytes()
        if data is None:
            return self.send_error(404, "Not Found")
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "drip":
            return self.drip(data)
        self.wfile.write(data)

    def endless(self, announce: bool):
        self.send_response(200)
        if announce:
            self.send_header("Content-Length", str(300 << 20))
        self.end_headers()
        block = bytes(64 << 10)
        while self.server.sent[self.path] < ENDLESS_LIMIT and not self.server.stop.is_set():
            self.wfile.write(block)  # fails once the client hung up: the handler ends there
            self.server.sent[self.path] += len(block)

    def drip(self, data: bytes):
        for i in range(min(len(data), int(DRIP_FOR / DRIP_EVERY))):
            self.wfile.write(data[i:i + 1])
            self.server.sent[self.path] += 1
            if self.server.stop.wait(DRIP_EVERY):
                return

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile():
    srv = Server(("127.0.0.1", 0), Hostile)
    srv.requests, srv.stop, srv.files, srv.bombs = [], threading.Event(), {}, {}
    srv.sent = collections.Counter()
    srv.url = lambda mode: f"http://127.0.0.1:{srv.server_address[1]}/{mode}/"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def bpcli(*args, env=None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "no_proxy": "*", "NO_COLOR": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "bpcli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


def cache_with_labels(root: Path, dataset: str = "mnist") -> Path:
    """A cache folder holding one verified file (the real MNIST test labels), to check it survives."""
    folder = root / dataset
    folder.mkdir(parents=True)
    shutil.copy(MINI / T10K_LABELS.name, folder)
    return folder


def only_labels_left(folder: Path) -> bool:
    assert sorted(p.name for p in folder.iterdir()) == [T10K_LABELS.name]  # no .part, no oversized file
    assert (folder / T10K_LABELS.name).read_bytes() == (MINI / T10K_LABELS.name).read_bytes()
    return True


# --- 14. an endless body is cut at the known size -----------------------------------------------------

@pytest.mark.parametrize("mode", ["endless", "announced"])
def test_endless_body_is_cut_at_the_known_size_then_the_next_mirror(hostile, tmp_path, mode):
    folder = cache_with_labels(tmp_path)
    images = dataclasses.replace(T10K_IMAGES, size=(MINI / T10K_IMAGES.name).stat().st_size)
    fetch("mnist", [images, LABELS], [hostile.url(mode), hostile.url("good")], folder, timeout=TIMEOUT)
    assert (folder / images.name).read_bytes() == (MINI / images.name).read_bytes()
    assert hostile.requests == [f"/{mode}/{images.name}", f"/good/{images.name}"]  # the labels were cached
    assert hostile.sent[f"/{mode}/{images.name}"] < 16 << 20  # the client hung up near 1.8 MB, not at 64 MiB

    with pytest.raises(DataError) as caught:
        fetch("mnist", [images], [hostile.url(mode)], tmp_path / "again", timeout=TIMEOUT)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"Cannot download {images.name} for dataset 'mnist' from any mirror. Tried:"
    cap = images.size + images.size // 8
    what = "announces 314,572,800 bytes" if mode == "announced" else f"sent more than {cap:,} bytes"
    assert lines[1] == (f"  {hostile.url(mode)}{images.name}: {what}, but the file is {images.size:,} bytes "
                        "(refused; nothing was kept)")
    assert list((tmp_path / "again").iterdir()) == []


def test_cli_endless_mirror_exits_4_and_leaves_the_cache_as_it_was(hostile, tmp_path):
    folder = cache_with_labels(tmp_path)
    proc = bpcli("data", "download", "mnist", "--data-dir", str(tmp_path), "--mirror", hostile.url("endless"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    lines = err.splitlines()
    assert lines[0] == "error: Cannot download train-images-idx3-ubyte.gz for dataset 'mnist' from any mirror. Tried:"
    assert lines[1].startswith(f"  {hostile.url('endless')}train-images-idx3-ubyte.gz: sent more than 11,151,474 "
                               "bytes, but the file is 9,912,422 bytes")
    assert hostile.sent["/endless/train-images-idx3-ubyte.gz"] < 32 << 20
    assert only_labels_left(folder)


# --- 15. a gzip bomb is refused beyond the size its IDX header declares -------------------------------

@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """An IDX header declaring 60000 28x28 images, then their 47 MB and 200 MiB more of zeros, gzip-compressed."""
    path = tmp_path_factory.mktemp("bomb") / FASHION_IMAGES.name
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: built fast, still 1:220
    header = encode_idx(np.zeros((0, 28, 28), dtype=np.uint8))[:4] + np.array(BOMB_SHAPE, ">u4").tobytes()
    with open(path, "wb") as out:
        out.write(packer.compress(header))
        zeros = bytes(4 << 20)
        for _ in range((int(np.prod(BOMB_SHAPE)) + BOMB_ZEROS) >> 22):
            out.write(packer.compress(zeros))
        out.write(packer.flush())
    assert path.stat().st_size < 2 << 20  # about 1 MB
    return path


def traced_peak(action):
    """(what action returned or raised, the peak of Python's allocations meanwhile, in bytes)."""
    tracemalloc.start()
    try:
        try:
            result = action()
        except DataError as error:
            result = error
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_bomb_is_refused_in_bounded_memory(bomb):
    declared = 16 + int(np.prod(BOMB_SHAPE))
    reason, peak = traced_peak(lambda: verify(bomb, FASHION_IMAGES))
    assert reason == (f"decompresses to more than the {declared:,} bytes its IDX header declares; refused without "
                      "decompressing the rest (a gzip bomb?)")
    assert peak < 8 << 20  # hashed in a stream: a few 1 MiB blocks, not 250 MiB
    error, peak = traced_peak(lambda: read_idx(bomb))
    assert isinstance(error, DataError) and str(error) == f"{bomb}: {reason}"
    assert peak < declared + (16 << 20)  # what the header declares, and no more


def test_bomb_on_a_mirror_then_the_next_mirror(hostile, bomb, tmp_path):
    content = encode_idx(np.arange(784 * 3, dtype=np.uint8).reshape(3, 28, 28))
    hostile.files["small-idx3-ubyte.gz"] = _gzip(content)
    hostile.bombs["small-idx3-ubyte.gz"] = bomb.read_bytes()
    small = RemoteFile("small-idx3-ubyte.gz", content_sha256=sha256_bytes(content))
    folder = cache_with_labels(tmp_path)
    fetch("mnist", [small], [hostile.url("bomb"), hostile.url("good")], folder, timeout=5.0)
    assert (folder / small.name).read_bytes() == hostile.files[small.name]
    with pytest.raises(DataError, match=rf"{hostile.url('bomb')}small-idx3-ubyte.gz: decompresses to more than"):
        fetch("mnist", [small], [hostile.url("bomb")], tmp_path / "again", timeout=5.0)
    assert list((tmp_path / "again").iterdir()) == []


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def peak_rss_of(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    """(peak resident memory in bytes, stderr) of a child, its own: the highest VmHWM read while it runs.

    Not wait4's ru_maxrss: that survives exec, so a child forked from a pytest process of 400 MB
    would report 400 MB whatever it did itself.
    """
    err = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    deadline, peak = time.monotonic() + timeout, 0
    while proc.poll() is None:
        peak = max(peak, vm_hwm(proc.pid))
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.005)
    reader.join(5)
    return peak, err[0]


def vm_hwm(pid: int) -> int:
    """The process's peak resident set in bytes so far (0 once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024
    except (OSError, IndexError):
        return 0


def test_cli_bomb_exits_4_in_bounded_memory(hostile, bomb, tmp_path):
    hostile.bombs[FASHION_IMAGES.name] = bomb.read_bytes()
    hostile.files[FASHION_IMAGES.name] = _gzip(encode_idx(np.zeros((3, 28, 28), dtype=np.uint8)))
    runs = {}
    for mode in ("good", "bomb"):  # "good" serves a small wrong file: the same failure without the bomb
        proc = bpcli("data", "download", "fashion-mnist", "--data-dir", str(tmp_path / mode),
                     "--mirror", hostile.url(mode))
        runs[mode] = (*peak_rss_of(proc), proc.returncode)
    rss, err, code = runs["bomb"]
    assert code == 4, err
    lines = err.splitlines()
    assert lines[0] == ("error: Cannot download train-images-idx3-ubyte.gz for dataset 'fashion-mnist' from any "
                        "mirror. Tried:")
    assert lines[1].startswith(f"  {hostile.url('bomb')}train-images-idx3-ubyte.gz: decompresses to more than the "
                               "47,040,016 bytes its IDX header declares")
    assert runs["good"][2] == 4 and "checksum mismatch" in runs["good"][1]
    assert rss < runs["good"][0] + (32 << 20), (rss, runs["good"][0])  # whole, it would take 250 MiB more
    assert list((tmp_path / "bomb" / "fashion-mnist").iterdir()) == []


# --- 16. a slow drip is dropped: each timeout window must bring a minimum of bytes ---------------------

def test_dripping_mirror_is_dropped_after_the_timeout_then_the_next_mirror(hostile, tmp_path):
    folder = tmp_path / "mnist"
    start = time.monotonic()
    fetch("mnist", [LABELS], [hostile.url("drip"), hostile.url("good")], folder, timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    assert folder.joinpath(LABELS.name).read_bytes() == (MINI / LABELS.name).read_bytes()
    assert TIMEOUT <= elapsed < 3 * TIMEOUT, elapsed
    assert 1 <= hostile.sent[f"/drip/{LABELS.name}"] < 40  # it did drip, and was dropped early
    start = time.monotonic()
    with pytest.raises(DataError) as caught:
        fetch("mnist", [LABELS], [hostile.url("drip")], tmp_path / "again", timeout=TIMEOUT)
    assert time.monotonic() - start < 3 * TIMEOUT
    line = str(caught.value).splitlines()[1]
    assert line.startswith(f"  {hostile.url('drip')}{LABELS.name}: too slow: ")
    assert line.endswith(" bytes in 0.5 s, below the minimum of 8 KiB/s")
    assert list((tmp_path / "again").iterdir()) == []


def test_cli_dripping_mirror_times_out_and_exits_4(hostile, tmp_path):
    folder = cache_with_labels(tmp_path)
    start = time.monotonic()
    proc = bpcli("data", "download", "mnist", "--data-dir", str(tmp_path), "--mirror", hostile.url("drip"),
                 env={"BPCLI_DOWNLOAD_TIMEOUT": str(TIMEOUT)})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert time.monotonic() - start < DRIP_FOR / 2  # python's start-up, then half a second
    lines = err.splitlines()
    assert lines[0] == "error: Cannot download train-images-idx3-ubyte.gz for dataset 'mnist' from any mirror. Tried:"
    assert lines[1].startswith(f"  {hostile.url('drip')}train-images-idx3-ubyte.gz: too slow: ")
    assert only_labels_left(folder)


# --- 17. SIGINT / SIGTERM during a download: out within a second, nothing half-written kept ---------------

TRAIN_CONFIG = """\
model:
  layers:
    - {{type: dense, units: 10}}
data:
  dataset: mnist
  mirrors: [{mirror}]
training:
  epochs: 1
output:
  dir: {runs}
"""


@pytest.mark.parametrize("command, signum, code", [
    ("train", signal.SIGINT, 130), ("train", signal.SIGTERM, 143),
    ("download", signal.SIGINT, 130), ("download", signal.SIGTERM, 143)])
def test_signal_during_a_download_stops_at_once_with_a_clean_cache(hostile, tmp_path, command, signum, code):
    folder = cache_with_labels(tmp_path / "cache")
    if command == "train":
        config = tmp_path / "mnist.yaml"
        config.write_text(TRAIN_CONFIG.format(mirror=hostile.url("drip"), runs=tmp_path / "runs"))
        args = ["train", str(config), "--quiet"]
    else:
        args = ["data", "download", "mnist", "--mirror", hostile.url("drip")]
    proc = bpcli(*args, env={"BPCLI_DATA_DIR": str(tmp_path / "cache")})
    part = folder / "train-images-idx3-ubyte.gz.part"
    deadline = time.monotonic() + 30
    while hostile.sent["/drip/train-images-idx3-ubyte.gz"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)  # until the download is under way
    assert part.exists() and proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still downloading 5 s after {signum.name}: {err}")
    assert time.monotonic() - sent < 1.0  # measured: 0.2-0.45 s, most of it the interpreter's exit
    assert proc.returncode == code, err
    assert err.splitlines()[0] == (f"error: download of train-images-idx3-ubyte.gz for dataset 'mnist' interrupted "
                                   f"by {signum.name}; no partial file was kept in {folder}")
    assert only_labels_left(folder) and not (tmp_path / "runs").exists()


# --- a cache that cannot be written is the cache's fault, not the mirrors' ---------------------------------

def test_cache_folder_under_a_regular_file(hostile, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CheckpointError) as caught:
        fetch("mnist", [LABELS], [hostile.url("good")], tmp_path / "file" / "mnist", timeout=TIMEOUT)
    assert caught.value.exit_code == 5
    assert str(caught.value).startswith(f"Cannot create the data cache folder {tmp_path / 'file' / 'mnist'} "
                                        "(Not a directory)")
    assert hostile.requests == [] and (tmp_path / "file").read_text() == "not a folder"


def _can_mount_read_only() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(shutil.which("unshare") is None or not _can_mount_read_only(),
                    reason="needs unshare to make a read-only bind mount in a user namespace")
def test_read_only_cache_is_named_as_the_cache_not_a_mirror(hostile, tmp_path):
    folder = cache_with_labels(tmp_path / "cache")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    env = {**os.environ, "no_proxy": "*", "NO_COLOR": "1"}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(tmp_path / "cache"), sys.executable, "-m",
                           "bpcli", "data", "download", "mnist", "--data-dir", str(tmp_path / "cache"),
                           "--mirror", hostile.url("good")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.splitlines()[0] == (
        f"error: Cannot write into the data cache folder {folder} (Read-only file system) to download "
        "train-images-idx3-ubyte.gz for dataset 'mnist'. The cache is at fault, not the mirrors: choose a "
        "writable folder with --data-dir, the config key data.data_dir or BPCLI_DATA_DIR.")
    assert hostile.requests == []  # no mirror was blamed, or even asked
    assert only_labels_left(folder)


def small_file_size_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))


def test_full_disk_while_downloading_is_the_cache_not_a_mirror(hostile, tmp_path):
    folder = cache_with_labels(tmp_path)
    proc = bpcli("data", "download", "mnist", "--data-dir", str(tmp_path), "--mirror", hostile.url("good"),
                 preexec_fn=small_file_size_limit)  # the 806 kB training images do not fit: EFBIG, like a full disk
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert err.splitlines()[0] == (
        f"error: Disk full in the data cache folder {folder} (File too large) to download train-images-idx3-ubyte.gz "
        "for dataset 'mnist'; no partial file was kept. Free some space, or choose a writable folder with "
        "--data-dir, the config key data.data_dir or BPCLI_DATA_DIR.")
    assert hostile.requests == ["/good/train-images-idx3-ubyte.gz"]  # not tried on another mirror: no use
    assert only_labels_left(folder)
