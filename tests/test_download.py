"""The downloader against a real HTTP server on 127.0.0.1 that misbehaves on purpose.

Every route serves real MNIST files from datasets/mnist-mini (checked against their real
upstream SHA-256) or breaks in one way: 404, 503, flipped bytes, a connection dropped
mid-file, a server that hangs. Nothing here ever reaches the internet.
"""

import gzip
import http.server
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import platformdirs
import pytest

from bpcli.data.checksums import RemoteFile, sha256_bytes, verify
from bpcli.data.download import default_cache_root, fetch, resolve_cache_root, resolve_mirrors
from bpcli.data.folder_import import import_files
from bpcli.data.idx import read_bytes
from bpcli.errors import DataError
from tests.idx_files import encode_idx, write_idx_gz

MINI = Path(__file__).resolve().parent.parent / "datasets" / "mnist-mini"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

# Upstream SHA-256 of the official MNIST test files (datasets/README.md).
T10K_LABELS = RemoteFile(
    "t10k-labels-idx1-ubyte.gz",
    sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    content_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2")
T10K_IMAGES = RemoteFile(
    "t10k-images-idx3-ubyte.gz",
    sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    content_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7")
MNIST_TEST = [T10K_IMAGES, T10K_LABELS]

# SHA-256 of the decompressed content of Fashion-MNIST (Debian re-compressed the .gz files).
FASHION = [
    RemoteFile("train-images-idx3-ubyte.gz",
               content_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    RemoteFile("train-labels-idx1-ubyte.gz",
               content_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    RemoteFile("t10k-images-idx3-ubyte.gz",
               content_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    RemoteFile("t10k-labels-idx1-ubyte.gz",
               content_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
]

TIMEOUT = 0.5  # client timeout in the tests
HANG = 2.0     # how long the "hang" route sleeps (cut short at teardown)


class Handler(http.server.BaseHTTPRequestHandler):
    """GET /<mode>[-suffix]/<file name>: mode is good, missing, busy, corrupt, truncated or hang."""

    def do_GET(self):
        self.server.requests.append(self.path)
        _, mode, name = self.path.split("/", 2)
        mode = mode.split("-")[0]  # "corrupt-1" and "corrupt-2" are two mirrors that behave alike
        path = self.server.folder / name
        if mode == "missing" or not path.is_file():
            return self.send_error(404, "Not Found")
        if mode == "busy":
            return self.send_error(503, "Service Unavailable")
        if mode == "hang" and self.server.stop.wait(HANG):
            return  # the test is over: just drop the connection
        data = path.read_bytes()
        body = data[:len(data) // 2] if mode == "truncated" else data
        if mode == "corrupt":  # same length, a few bytes flipped in the middle
            middle = len(data) // 2
            body = data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 8]) + data[middle + 8:]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))  # the full length, even when truncated
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout) makes the handler's write fail: expected here


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # A proxy from the environment must never see (or forward) the test requests.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def server():
    srv = Server(("127.0.0.1", 0), Handler)
    srv.folder, srv.requests, srv.stop = MINI, [], threading.Event()
    srv.url = lambda mode: f"http://127.0.0.1:{srv.server_address[1]}/{mode}/"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()  # wake a sleeping "hang" handler
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def dead_url():
    """A URL on a local port where nothing listens: connection refused, like no network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def same_as_upstream(dest, files=MNIST_TEST):
    for remote in files:
        assert (dest / remote.name).read_bytes() == (MINI / remote.name).read_bytes()
    assert not list(dest.glob("*.part"))
    return True


def test_good_download_reports_progress(server, tmp_path):
    dest = tmp_path / "cache" / "mnist"
    seen = []
    paths = fetch("mnist", MNIST_TEST, [server.url("good")], dest, timeout=TIMEOUT,
                  on_progress=lambda name, done, total: seen.append((name, done, total)))
    assert paths == [dest / f.name for f in MNIST_TEST]
    assert same_as_upstream(dest)
    images = [(done, total) for name, done, total in seen if name == T10K_IMAGES.name]
    size = (MINI / T10K_IMAGES.name).stat().st_size
    assert images[0] == (0, size) and images[-1] == (size, size)
    assert len(images) >= 3  # 1.6 MB arrives in more than one 1 MiB chunk
    assert all(a[0] < b[0] for a, b in zip(images, images[1:]))
    assert server.requests == ["/good/" + f.name for f in MNIST_TEST]


@pytest.mark.parametrize("mode, reason", [("missing", "HTTP 404 Not Found"),
                                          ("busy", "HTTP 503 Service Unavailable")])
def test_http_error_then_good_mirror(server, tmp_path, mode, reason):
    assert fetch("mnist", [T10K_LABELS], [server.url(mode), server.url("good")], tmp_path,
                 timeout=TIMEOUT) == [tmp_path / T10K_LABELS.name]
    assert same_as_upstream(tmp_path, [T10K_LABELS])
    assert server.requests == [f"/{mode}/{T10K_LABELS.name}", f"/good/{T10K_LABELS.name}"]


def test_http_error_is_reported(server, tmp_path):
    with pytest.raises(DataError) as caught:
        fetch("mnist", [T10K_LABELS], [server.url("missing"), server.url("busy")], tmp_path)
    message = str(caught.value)
    assert f"{server.url('missing')}{T10K_LABELS.name}: HTTP 404 Not Found" in message
    assert f"{server.url('busy')}{T10K_LABELS.name}: HTTP 503 Service Unavailable" in message
    assert "network seems unreachable" not in message


def test_corrupt_file_on_every_mirror(server, tmp_path):
    mirrors = [server.url("corrupt-1"), server.url("corrupt-2")]
    with pytest.raises(DataError) as caught:
        fetch("mnist", [T10K_IMAGES], mirrors, tmp_path, timeout=TIMEOUT)
    message = str(caught.value)
    for mirror in mirrors:
        assert f"{mirror}{T10K_IMAGES.name}: checksum mismatch (got " in message
    assert message.count("expected 8d422c7b0a1c1c79") == 2
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part


def test_connection_dropped_mid_file_then_good_mirror(server, tmp_path):
    seen = []
    fetch("mnist", [T10K_IMAGES], [server.url("truncated"), server.url("good")], tmp_path,
          timeout=TIMEOUT, on_progress=lambda *args: seen.append(args))
    assert same_as_upstream(tmp_path, [T10K_IMAGES])
    size = (MINI / T10K_IMAGES.name).stat().st_size
    with pytest.raises(DataError, match=rf"connection closed after {size // 2} of {size} bytes"):
        fetch("mnist", [T10K_IMAGES], [server.url("truncated")], tmp_path / "again", timeout=TIMEOUT)
    assert list((tmp_path / "again").iterdir()) == []


def test_hanging_mirror_times_out_then_good_mirror(server, tmp_path):
    start = time.monotonic()
    fetch("mnist", [T10K_LABELS], [server.url("hang"), server.url("good")], tmp_path, timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    assert same_as_upstream(tmp_path, [T10K_LABELS])
    assert TIMEOUT <= elapsed < HANG  # waited for the timeout, not for the hanging server
    with pytest.raises(DataError, match=rf"{server.url('hang')}\S+: timed out after 0.5 s"):
        fetch("mnist", [T10K_LABELS], [server.url("hang")], tmp_path / "again", timeout=TIMEOUT)


def test_offline_message_tells_what_to_do(dead_url, tmp_path):
    with pytest.raises(DataError) as caught:
        fetch("mnist", MNIST_TEST, [dead_url], tmp_path, timeout=TIMEOUT)
    message = str(caught.value)
    assert message.startswith("The network seems unreachable")
    assert f"{dead_url}{T10K_IMAGES.name}: cannot connect (Connection refused)" in message
    assert "bpcli data import mnist DIR" in message and "mnist-mini" in message
    assert f"download {T10K_IMAGES.name}, {T10K_LABELS.name} " in message and str(tmp_path) in message
    assert DataError.exit_code == 4 and list(tmp_path.iterdir()) == []


def test_mixed_failures_are_not_called_offline(server, dead_url, tmp_path):
    with pytest.raises(DataError) as caught:
        fetch("mnist", [T10K_LABELS], [dead_url, server.url("missing")], tmp_path, timeout=TIMEOUT)
    assert not str(caught.value).startswith("The network seems unreachable")
    assert "Connection refused" in str(caught.value) and "HTTP 404" in str(caught.value)


def test_cached_file_corrupted_later_is_downloaded_again(server, tmp_path):
    shutil.copy(MINI / T10K_LABELS.name, tmp_path)
    cached = tmp_path / T10K_LABELS.name
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    fetch("mnist", [T10K_LABELS], [server.url("good")], tmp_path, timeout=TIMEOUT)
    assert same_as_upstream(tmp_path, [T10K_LABELS])
    assert server.requests == [f"/good/{T10K_LABELS.name}"]


def test_corrupt_cache_and_no_mirror_says_it_was_removed(dead_url, tmp_path):
    (tmp_path / T10K_LABELS.name).write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cached copy was corrupt and has been removed: checksum mismatch"):
        fetch("mnist", [T10K_LABELS], [dead_url], tmp_path, timeout=TIMEOUT)
    assert list(tmp_path.iterdir()) == []


def test_verified_cache_is_used_without_any_request(server, tmp_path):
    for remote in MNIST_TEST:
        shutil.copy(MINI / remote.name, tmp_path)
    seen = []
    paths = fetch("mnist", MNIST_TEST, [server.url("good")], tmp_path, on_progress=lambda *a: seen.append(a))
    assert paths == [tmp_path / f.name for f in MNIST_TEST]
    assert server.requests == [] and seen == []


def test_files_verified_before_a_failure_stay(server, tmp_path):
    missing = RemoteFile("no-such-file.gz", sha256="0" * 64)
    with pytest.raises(DataError, match="download no-such-file.gz from any mnist mirror"):
        fetch("mnist", [T10K_LABELS, missing], [server.url("good")], tmp_path, timeout=TIMEOUT)
    assert sorted(p.name for p in tmp_path.iterdir()) == [T10K_LABELS.name]


def test_orphan_part_files_are_removed(server, tmp_path):
    (tmp_path / f"{T10K_LABELS.name}.part").write_bytes(b"half a file")
    (tmp_path / "other-file.gz.part").write_bytes(b"left by a killed run")
    fetch("mnist", [T10K_LABELS], [server.url("good")], tmp_path, timeout=TIMEOUT)
    assert sorted(p.name for p in tmp_path.iterdir()) == [T10K_LABELS.name]
    assert same_as_upstream(tmp_path, [T10K_LABELS])


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_verified_by_content(server, tmp_path):
    server.folder = DEBIAN_FASHION
    paths = fetch("fashion-mnist", FASHION, [server.url("good")], tmp_path, timeout=5.0)
    assert [p.name for p in paths] == [f.name for f in FASHION]
    for remote, path in zip(FASHION, paths):
        assert path.read_bytes() == (DEBIAN_FASHION / remote.name).read_bytes()
        assert verify(path, remote) is None
    assert read_bytes(paths[0])[:8] == bytes([0, 0, 8, 3, 0, 0, 0xEA, 0x60])  # 60000 images
    # The upstream .gz checksum does not match Debian's copy; the content checksum does.
    upstream_only = RemoteFile(FASHION[3].name, sha256="0" * 64)
    assert verify(paths[3], upstream_only).startswith("checksum mismatch")


def test_verify_reasons(tmp_path):
    good = tmp_path / "good.gz"
    shutil.copy(MINI / T10K_LABELS.name, good)
    assert verify(good, T10K_LABELS) is None
    assert verify(good, RemoteFile("x", content_sha256=T10K_LABELS.content_sha256)) is None
    assert verify(good, RemoteFile("x")) is None  # nothing to check against
    bad = RemoteFile("x", sha256="cd34" + "0" * 60)
    assert verify(good, bad) == "checksum mismatch (got f7ae60f92e00ec6d…, expected cd34000000000000…)"
    broken = tmp_path / "broken.gz"
    broken.write_bytes(good.read_bytes()[:100])
    assert verify(broken, RemoteFile("x", content_sha256="0" * 64)) == "corrupt gzip data"


# --- import_files -----------------------------------------------------------------------------

SMALL = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
SMALL_RAW = encode_idx(SMALL)
SMALL_FILE = RemoteFile("small-idx3-ubyte.gz", content_sha256=sha256_bytes(SMALL_RAW))


def test_import_gzip_and_raw_files(tmp_path):
    gz_dir, raw_dir = tmp_path / "gz", tmp_path / "raw"
    gz_dir.mkdir(), raw_dir.mkdir()
    write_idx_gz(gz_dir / SMALL_FILE.name, SMALL)
    (raw_dir / "small-idx3-ubyte").write_bytes(SMALL_RAW)
    for source in (gz_dir, raw_dir):
        dest = tmp_path / "cache" / source.name
        assert import_files("small", [SMALL_FILE], source, dest) == [dest / SMALL_FILE.name]
        cached = dest / SMALL_FILE.name
        assert cached.read_bytes()[:2] == b"\x1f\x8b" and gzip.decompress(cached.read_bytes()) == SMALL_RAW
        assert verify(cached, SMALL_FILE) is None and not list(dest.glob("*.part"))


def test_import_real_mnist_gz(tmp_path):
    assert import_files("mnist", MNIST_TEST, MINI, tmp_path) == [tmp_path / f.name for f in MNIST_TEST]
    assert same_as_upstream(tmp_path)


def test_import_rejects_a_wrong_file_before_copying_anything(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    write_idx_gz(source / SMALL_FILE.name, SMALL)
    wrong = RemoteFile("t10k-labels-idx1-ubyte.gz", content_sha256=T10K_LABELS.content_sha256)
    (source / "t10k-labels-idx1-ubyte").write_bytes(SMALL_RAW)  # raw IDX, but not the labels
    with pytest.raises(DataError) as caught:
        import_files("mnist", [SMALL_FILE, wrong], source, tmp_path / "dest")
    message = str(caught.value)
    assert str(source / "t10k-labels-idx1-ubyte") in message
    assert sha256_bytes(SMALL_RAW) in message and T10K_LABELS.content_sha256 in message
    assert not (tmp_path / "dest").exists()  # the good first file was not copied either


def test_import_missing_file_names_the_folder(tmp_path):
    with pytest.raises(DataError) as caught:
        import_files("mnist", MNIST_TEST, tmp_path, tmp_path / "dest")
    message = str(caught.value)
    assert str(tmp_path) in message and T10K_IMAGES.name in message and T10K_LABELS.name in message
    with pytest.raises(DataError, match="folder does not exist"):
        import_files("mnist", MNIST_TEST, tmp_path / "nowhere", tmp_path / "dest")


# --- where the cache is and which mirrors ------------------------------------------------------

def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("BPCLI_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_root() == Path(platformdirs.user_cache_dir("bpcli"))
    if sys.platform.startswith("linux"):
        assert resolve_cache_root() == tmp_path / "xdg" / "bpcli"
    monkeypatch.setenv("BPCLI_DATA_DIR", str(tmp_path / "env"))
    assert default_cache_root() == resolve_cache_root() == tmp_path / "env"
    assert resolve_cache_root(config_value="~/from-config") == tmp_path / "home" / "from-config"
    assert resolve_cache_root("~/opt", "~/from-config") == tmp_path / "home" / "opt"


def test_mirror_precedence_splitting_and_dataset_expansion(monkeypatch):
    defaults = ["https://a.example/mnist/", "https://b.example/mnist"]
    monkeypatch.delenv("BPCLI_MIRROR", raising=False)
    assert resolve_mirrors("mnist", defaults) == ["https://a.example/mnist/", "https://b.example/mnist/"]
    monkeypatch.setenv("BPCLI_MIRROR", "http://env.local/{dataset}, file:///srv/data/{dataset}")
    assert resolve_mirrors("fashion-mnist", defaults) == [
        "http://env.local/fashion-mnist/", "file:///srv/data/fashion-mnist/"]
    override = "http://x.local/{dataset}/,http://y.local\n  http://z.local/d"
    assert resolve_mirrors("mnist", defaults, override) == [
        "http://x.local/mnist/", "http://y.local/", "http://z.local/d/"]
    assert resolve_mirrors("mnist", defaults, ["http://p.local", "http://q.local/{dataset}"]) == [
        "http://p.local/", "http://q.local/mnist/"]
    with pytest.raises(DataError, match="not a valid base URL"):
        resolve_mirrors("mnist", defaults, "ftp.example.com/mnist")


def test_file_url_mirror(tmp_path):
    # An air-gapped mirror on a shared disk, reached through file://.
    fetch("mnist", [T10K_LABELS], [MINI.as_uri() + "/"], tmp_path)
    assert same_as_upstream(tmp_path, [T10K_LABELS])
    with pytest.raises(DataError) as caught:  # a missing local file is no network problem
        fetch("mnist", [T10K_LABELS], [(tmp_path / "empty").as_uri() + "/"], tmp_path / "again")
    assert "cannot open (No such file or directory)" in str(caught.value)
    assert "network seems unreachable" not in str(caught.value)


# --- IDX content read in a stream (checksums and loading) ----------------------------------------

def test_content_stream_reads_gzip_as_gzip_decompress_does(tmp_path):
    from bpcli.data.idx import content_chunks

    raw = encode_idx(np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28) % 251)
    half = len(raw) // 2
    cases = {"one member": gzip.compress(raw, mtime=0),
             "two members, zero padding": gzip.compress(raw[:half], mtime=0) + gzip.compress(raw[half:], mtime=0)
             + bytes(100)}
    for what, data in cases.items():
        path = tmp_path / "x.gz"
        path.write_bytes(data)
        assert gzip.decompress(data) == raw and b"".join(content_chunks(path)) == raw, what
        assert verify(path, RemoteFile("x", content_sha256=sha256_bytes(raw))) is None
    path.write_bytes(gzip.compress(raw + b"\0", mtime=0))  # one byte more than the header declares
    assert verify(path, RemoteFile("x", content_sha256="0" * 64)).startswith(
        f"decompresses to more than the {len(raw):,} bytes its IDX header declares")
    path.write_bytes(gzip.compress(b"<html>not found</html>", mtime=0))
    assert verify(path, RemoteFile("x", content_sha256="0" * 64)).startswith(
        "not an IDX file (bad magic number 3c68746d")


def test_download_timeout_from_the_environment(monkeypatch):
    from bpcli.data.transfer import TIMEOUT as DEFAULT
    from bpcli.data.transfer import default_timeout
    from bpcli.errors import ConfigError

    monkeypatch.delenv("BPCLI_DOWNLOAD_TIMEOUT", raising=False)
    assert default_timeout() == DEFAULT == 30.0
    monkeypatch.setenv("BPCLI_DOWNLOAD_TIMEOUT", "2.5")
    assert default_timeout() == 2.5
    for bad in ("0", "-1", "soon", "nan", "inf"):
        monkeypatch.setenv("BPCLI_DOWNLOAD_TIMEOUT", bad)
        with pytest.raises(ConfigError, match=f"BPCLI_DOWNLOAD_TIMEOUT='{bad}' is not a number of seconds above 0"):
            default_timeout()
