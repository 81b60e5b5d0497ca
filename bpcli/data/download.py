"""Fetch dataset files from mirrors into a per-user cache, verified by SHA-256.

Contract: a file enters the cache only after a checksum matched (checksums.verify: of
the file as published, or of its decompressed content, hashed in a stream that stops at
the size the IDX header declares, so a gzip bomb is refused in a few MiB). A download
streams into `<name>.part`, is synced, counted against Content-Length and verified before
an atomic rename, so a crash or Ctrl-C never leaves a half file under the final name (the
next run deletes the orphan `.part`). Cached files are re-verified on every use; a copy
corrupted later is deleted and fetched again. As library code this module never prints:
progress goes to a callback, and every failure is a DataError whose message lists each URL
tried with its reason and says how to place the files by hand.

What a mirror may cost, at most (each fault moves on to the next mirror):
- no answer: `timeout` seconds (30, or $BPCLI_DOWNLOAD_TIMEOUT) to connect and send headers;
- a slow drip: each `timeout`-second window must bring `min_rate` (8 KiB/s) on average, as
  with curl's --speed-limit (a byte now and then no longer restarts a per-read clock);
- an endless body: the file's known size plus 1/8 (room for a re-compressed copy); a
  larger Content-Length is refused before reading.
The network is read by a thread of its own (Transfer), so the caller waits with its own
deadlines and can give up at any moment, whatever the socket is blocked on. A SIGINT or
SIGTERM during fetch stops it within POLL seconds: the `.part` file is removed and
DownloadInterrupted (exit 130 or 143) raised. A cache folder that cannot be written is
the cache's fault (exit 5, or 6 when the disk is full), never reported as a mirror's.

Plain urllib rather than requests or pooch: we need per-mirror timeouts, `.part` files,
content checksums and our own progress hook, which those abstractions hide.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import platformdirs

from bpcli.data.checksums import RemoteFile, verify
from bpcli.data.transfer import (MIN_RATE, MirrorFault, Pace, PartFile, Stop,
                                  Transfer, content_length, default_timeout, stop_on_signals)
from bpcli.errors import CheckpointError, DataError, DiskFullError

URL_SCHEMES = ("http", "https", "file")  # file:// serves an air-gapped mirror on a shared disk
SIZE_MARGIN = 8         # a download may exceed the file's known size by 1/8 of it (at least 64 KiB), no more
UNKNOWN_SIZE = 1 << 30  # the cap for a file whose size is not known

Progress = Callable[[str, int, "int | None"], None]  # (file name, bytes done, total or None)


@dataclass(frozen=True)
class _Failure:
    url: str
    reason: str
    unreachable: bool = False  # could not connect at all (no network, DNS, refused)


# --- where the cache lives and which mirrors to use -------------------------------------

def default_cache_root() -> Path:
    """$BPCLI_DATA_DIR if set, else the per-user cache dir (XDG_CACHE_HOME on Linux)."""
    env = os.environ.get("BPCLI_DATA_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("bpcli"))


def resolve_cache_root(option: str | None = None, config_value: str | None = None) -> Path:
    """--data-dir option > config key > BPCLI_DATA_DIR > per-user cache dir."""
    chosen = option or config_value
    return Path(chosen).expanduser() if chosen else default_cache_root()


def resolve_mirrors(dataset: str, defaults: list[str],
                    override: str | list[str] | None = None) -> list[str]:
    """Config override > $BPCLI_MIRROR > defaults, as base URLs ending in "/"."""
    if override:
        source, raw = "the config", override
    elif os.environ.get("BPCLI_MIRROR"):
        source, raw = "BPCLI_MIRROR", os.environ["BPCLI_MIRROR"]
    else:
        source, raw = "the built-in mirror list", defaults
    mirrors: list[str] = []
    for url in _split_urls(raw):
        url = url.replace("{dataset}", dataset).rstrip("/") + "/"
        _check_url(url, source)
        if url not in mirrors:
            mirrors.append(url)
    return mirrors


def _split_urls(raw: str | list[str]) -> list[str]:
    # A string (or a list item) may hold several URLs separated by commas or whitespace.
    items = [raw] if isinstance(raw, str) else list(raw)
    return [url for item in items for url in re.split(r"[,\s]+", str(item)) if url]


def _check_url(url: str, source: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in URL_SCHEMES:
        raise DataError(f"Mirror URL {url!r} (from {source}) is not a valid base URL: it must start "
                        f"with {', '.join(s + '://' for s in URL_SCHEMES)}, for example "
                        "http://host/{dataset}/.")


# --- download ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Job:
    """One call of fetch: what each step needs."""

    dataset: str
    files: list[RemoteFile]
    dest: Path
    timeout: float
    min_rate: float
    report: Progress
    stop: Stop


def fetch(dataset: str, files: list[RemoteFile], mirrors: list[str], dest: Path, *,
          timeout: float | None = None, min_rate: float = MIN_RATE,
          on_progress: Progress | None = None) -> list[Path]:
    """Make every file present and verified in dest, downloading what is missing or corrupt."""
    dest = Path(dest)
    timeout = default_timeout() if timeout is None else timeout
    prepare_cache_folder(dest)
    with stop_on_signals(dataset, dest) as stop:
        job = _Job(dataset, list(files), dest, timeout, min_rate,
                   on_progress or (lambda name, done, total: None), stop)
        paths = []
        for remote in job.files:
            paths.append(_fetch_one(job, remote, mirrors))
            stop.check(remote.name)  # a signal that came while verifying is honoured here, not lost
        return paths


def prepare_cache_folder(dest: Path) -> None:
    """Make the cache folder (a failure is the cache's) and remove .part files a killed download left."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _cache_error(error, dest, "create", "") from None
    for orphan in dest.glob("*.part"):  # left by a run that was killed mid-download
        with contextlib.suppress(OSError):
            orphan.unlink()


def _fetch_one(job: _Job, remote: RemoteFile, mirrors: list[str]) -> Path:
    final = job.dest / remote.name
    corrupt = None
    if final.exists():
        corrupt = verify(final, remote)
        if corrupt is None:
            return final  # verified cache hit: no network
        with contextlib.suppress(OSError):
            final.unlink()  # corrupted after download: fetch it again
    failures = []
    for base in mirrors:
        failure = _try_mirror(job, base + remote.name, remote, final)
        if failure is None:
            return final
        failures.append(failure)
    raise DataError(_failure_message(job, remote, failures, corrupt))


def _try_mirror(job: _Job, url: str, remote: RemoteFile, final: Path) -> _Failure | None:
    """Download url into final through a .part file; None on success. A cache that cannot be written raises."""
    import http.client   # here, not at the top: most runs download nothing, and the HTTP stack is ~30 ms to import
    import urllib.error

    part = final.with_name(final.name + ".part")
    try:
        _stream(job, url, remote, part)
        reason = verify(part, remote)
        if reason is not None:
            return _Failure(url, reason)
        _publish(job, remote, part, final)
        return None
    except MirrorFault as fault:
        return _Failure(url, str(fault))
    except urllib.error.HTTPError as error:  # before URLError: it is a subclass
        error.close()
        return _Failure(url, f"HTTP {error.code} {error.reason}")
    except urllib.error.URLError as error:  # before any response: no connection (or no local file)
        local = url.startswith("file:")
        what = "cannot open" if local else "cannot connect"
        return _Failure(url, f"{what} ({_describe(error.reason, job.timeout)})", unreachable=not local)
    except (http.client.HTTPException, socket.timeout, TimeoutError, ConnectionError, OSError) as error:
        return _Failure(url, _describe(error, job.timeout))
    except ValueError as error:  # a URL urllib cannot parse
        return _Failure(url, f"invalid URL ({error})")
    finally:  # a failed or interrupted download leaves nothing behind
        with contextlib.suppress(OSError):
            part.unlink()


def _stream(job: _Job, url: str, remote: RemoteFile, part: Path) -> None:
    """Stream url into part: headers within the timeout, then the minimum rate, up to the size cap."""
    fail = functools.partial(_cache_error, folder=job.dest, verb="write into", doing=_doing(job, remote))
    check_stop = functools.partial(job.stop.check, remote.name)
    with PartFile(part, fail) as out, Transfer(url, job.timeout) as transfer:
        response = transfer.next(time.monotonic() + job.timeout, check_stop)
        if response is None:
            raise TimeoutError("no response")
        length = content_length(response)
        cap, total, done = _size_cap(remote, length), length if length is not None else remote.size, 0
        job.report(remote.name, done, total)
        pace = Pace(job.timeout, job.min_rate)
        while chunk := pace.next(transfer, check_stop):
            done += len(chunk)
            if done > cap:
                raise MirrorFault(_too_large(f"sent more than {cap:,} bytes", remote))
            out.write(chunk)
            job.report(remote.name, done, total)
        out.sync()  # the rename that follows must never publish unwritten data
    if length is not None and done != length:
        raise MirrorFault(f"connection closed after {done} of {length} bytes")


def _publish(job: _Job, remote: RemoteFile, part: Path, final: Path) -> None:
    try:
        os.replace(part, final)
    except OSError as error:
        raise _cache_error(error, job.dest, "write into", _doing(job, remote)) from None


def _doing(job: _Job, remote: RemoteFile) -> str:
    return f" to download {remote.name} for dataset {job.dataset!r}"


def _size_cap(remote: RemoteFile, length: int | None) -> int:
    """The most bytes accepted: the known size plus a margin (room for a re-compressed copy)."""
    cap = UNKNOWN_SIZE if remote.size is None else remote.size + max(remote.size // SIZE_MARGIN, 64 << 10)
    if length is not None and length > cap:
        raise MirrorFault(_too_large(f"announces {length:,} bytes", remote))
    return cap


def _too_large(what: str, remote: RemoteFile) -> str:
    size = f"the file is {remote.size:,} bytes" if remote.size is not None else "the file's size is unknown"
    return f"{what}, but {size} (refused; nothing was kept)"


def _cache_error(error: OSError, folder: Path, verb: str, doing: str) -> CheckpointError:
    """The cache folder cannot be written: its own fault (exit 5, or 6 when full), never a mirror's."""
    why = error.strerror or str(error)
    where = "choose a writable folder with --data-dir, the config key data.data_dir or BPCLI_DATA_DIR"
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return DiskFullError(f"Disk full in the data cache folder {folder} ({why}){doing}; no partial file was "
                             f"kept. Free some space, or {where}.")
    return CheckpointError(f"Cannot {verb} the data cache folder {folder} ({why}){doing}. The cache is at fault, "
                           f"not the mirrors: {where}.")


def _describe(error: object, timeout: float) -> str:
    import http.client

    if isinstance(error, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:g} s"
    if isinstance(error, http.client.HTTPException):
        return f"bad HTTP response ({type(error).__name__}: {error})"
    if isinstance(error, OSError):
        return error.strerror or str(error) or type(error).__name__
    return str(error)


def _failure_message(job: _Job, remote: RemoteFile, failures: list[_Failure], corrupt: str | None) -> str:
    dataset, dest = job.dataset, job.dest
    if not failures:
        head = (f"Cannot download {remote.name} for dataset {dataset!r}: no mirror is configured "
                "(set BPCLI_MIRROR or the mirror key in the config).")
    elif all(f.unreachable for f in failures):
        head = (f"The network seems unreachable: no mirror could be contacted to download "
                f"{remote.name} for dataset {dataset!r}. Tried:")
    else:
        head = f"Cannot download {remote.name} for dataset {dataset!r} from any mirror. Tried:"
    tried = "".join(f"\n  {f.url}: {f.reason}" for f in failures)
    cached = f"\nThe cached copy was corrupt and has been removed: {corrupt}." if corrupt else ""
    missing = ", ".join(f.name for f in job.files if not (dest / f.name).exists()) or remote.name
    return (f"{head}{tried}{cached}\nTo place the files by hand, download {missing} from any "
            f"{dataset} mirror into {dest}, or import them with `bpcli data import {dataset} DIR`. "
            "`dataset: mnist-mini` ships with bpcli and needs no network.")
