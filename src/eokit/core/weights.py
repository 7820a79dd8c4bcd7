"""Resolve model weights: local path, then cache folder, then download with a sha256 check.

``EOKIT_OFFLINE=1`` forbids downloads (the error says where to put the file); ``EOKIT_CACHE_DIR``
moves the cache (default ``~/.cache/eokit``). Downloads stream to a hidden temporary file in the
cache folder and are renamed into place only after the checksum matches, so an interrupted or
corrupted download never looks like a valid file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from eokit.core.errors import InputError
from eokit.core.raster import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["WeightsSpec", "default_cache_dir", "hub_offline", "is_offline", "resolve_weights",
           "sha256_file"]

_CHUNK = 1 << 20
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WeightsSpec:
    """Where a weights file comes from and how to recognise it.

    Args:
        name: Short name shown in messages (e.g. ``"canet-levir-r18"``).
        url: HTTP(S) download address.
        sha256: Expected hex digest of the file.
        filename: Name in the cache folder (default: last part of the URL path).
    """

    name: str
    url: str
    sha256: str
    filename: str | None = None

    @property
    def cache_name(self) -> str:
        """File name used in the cache folder."""
        name = self.filename or Path(urlparse(self.url).path).name
        if not name or "/" in name or name in (".", ".."):
            raise InputError(f"weights {self.name!r}: cannot derive a file name from {self.url!r}",
                             parameter="filename")
        return name


@contextlib.contextmanager
def hub_offline(offline: bool | None = None) -> Iterator[None]:
    """Keep the Hugging Face hub (timm's pretrained weights) on its local cache when offline.

    Active only when eokit is offline (``offline`` or ``EOKIT_OFFLINE``): a missing file then fails
    at once instead of after a minute of network retries.
    """
    if not (offline if offline is not None else is_offline()):
        yield
        return
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def default_cache_dir() -> Path:
    """``$EOKIT_CACHE_DIR`` if set, else ``~/.cache/eokit``."""
    env = os.environ.get("EOKIT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eokit"


def is_offline() -> bool:
    """True when ``EOKIT_OFFLINE`` is set to 1/true/yes."""
    return os.environ.get("EOKIT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified(path: Path, expected: str) -> bool:
    """Check a cached file against ``expected``; a sidecar avoids re-hashing unchanged files."""
    marker = _marker(path)
    stat = path.stat()
    stamp = f"{expected} {stat.st_size} {stat.st_mtime_ns}"
    if marker.is_file() and marker.read_text().strip() == stamp:
        return True
    if sha256_file(path) != expected:
        return False
    try:
        marker.write_text(stamp + "\n")
    except OSError:  # read-only cache: fine, we re-hash next time
        pass
    return True


def _download(spec: WeightsSpec, target: Path, expected: str, progress: bool) -> None:
    from tqdm.auto import tqdm

    logger.info("downloading %s from %s", spec.name, spec.url)
    digest = hashlib.sha256()
    with atomic_write(target) as tmp:
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as response:  # noqa: S310
                total = int(response.headers.get("Content-Length") or 0) or None
                with tmp.open("wb") as out, tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=spec.name, disable=not progress, leave=False,
                ) as bar:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise InputError(
                f"download of weights {spec.name!r} from {spec.url} failed ({reason}); download "
                f"it yourself and put it at {target}",
                parameter="weights",
            ) from err
        actual = digest.hexdigest()
        if actual != expected:
            raise InputError(
                f"weights {spec.name!r} from {spec.url} have sha256 {actual}, expected {expected}; "
                "the download was discarded",
                parameter="weights",
            )
    _marker(target).write_text(
        f"{expected} {target.stat().st_size} {target.stat().st_mtime_ns}\n"
    )


def resolve_weights(
    spec_or_path: WeightsSpec | str | Path,
    *,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> Path:
    """Return a local path to weights: the path itself, the cached copy, or a fresh download.

    Order: an existing local file (given as a path) -> ``cache_dir/<filename>`` (checked against the
    sha256) -> download from the spec's URL with a sha256 check, unless offline.

    Args:
        spec_or_path: A local file path, or a :class:`WeightsSpec`.
        cache_dir: Cache folder (default :func:`default_cache_dir`).
        offline: Forbid downloads (default: ``EOKIT_OFFLINE`` environment variable).
        progress: Show a download progress bar.

    Returns:
        Path of a verified weights file.

    Raises:
        InputError: missing local file; cached file with the wrong checksum; offline and not cached
            (the message gives the URL and where to put the file); failed download; checksum
            mismatch (nothing is kept).
    """
    if not isinstance(spec_or_path, WeightsSpec):
        path = Path(spec_or_path).expanduser()
        if str(spec_or_path).startswith(("http://", "https://")):
            raise InputError("a URL needs a sha256: pass a WeightsSpec(name, url, sha256)",
                             parameter="weights")
        if path.is_dir():
            raise InputError("is a folder, expected a weights file", path=path)
        if not path.is_file():
            raise InputError("weights file not found", path=path)
        return path

    spec = spec_or_path
    expected = spec.sha256.strip().lower()
    if not _SHA_RE.match(expected):
        raise InputError(f"weights {spec.name!r}: sha256 must be 64 hex digits", parameter="sha256")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / spec.cache_name
    if target.is_file():
        if _verified(target, expected):
            logger.debug("weights %s found in cache: %s", spec.name, target)
            return target
        raise InputError(
            f"cached weights {spec.name!r} do not match sha256 {expected}; delete the file to "
            "download it again",
            path=target,
        )
    if offline if offline is not None else is_offline():
        raise InputError(
            f"weights {spec.name!r} are not in the cache and downloads are off (EOKIT_OFFLINE=1); "
            f"download {spec.url} and put it at {target}",
            parameter="weights",
        )
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the weights cache ({err.strerror})", path=cache) from err
    _download(spec, target, expected, progress)
    logger.info("weights %s saved to %s", spec.name, target)
    return target
