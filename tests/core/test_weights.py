"""Weights resolver against generated files served by a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from eokit.core.errors import InputError
from eokit.core.weights import WeightsSpec, resolve_weights, sha256_file


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Handler", (_Handler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def make_file(root: Path, name: str = "model.safetensors", size: int = 3_000_000) -> str:
    data = hashlib.sha256(b"seed").digest() * (size // 32)
    (root / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_download_with_good_sha_then_cache_hit_without_network(
    server: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    url, root, requests = server
    sha = make_file(root)
    cache = tmp_path / "cache"
    spec = WeightsSpec("tiny", f"{url}/model.safetensors", sha)
    path = resolve_weights(spec, cache_dir=cache, offline=False, progress=False)
    assert path == cache / "model.safetensors"
    assert sha256_file(path) == sha
    assert requests == ["/model.safetensors"]
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temp left

    (root / "model.safetensors").unlink()  # server no longer has it; cache must answer
    again = resolve_weights(spec, cache_dir=cache, offline=True, progress=False)
    assert again == path and len(requests) == 1


def test_bad_sha_is_rejected_and_not_kept(
    server: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    url, root, _ = server
    make_file(root)
    cache = tmp_path / "cache"
    spec = WeightsSpec("tiny", f"{url}/model.safetensors", "0" * 64, filename="w.safetensors")
    with pytest.raises(InputError, match="sha256"):
        resolve_weights(spec, cache_dir=cache, offline=False, progress=False)
    assert list(cache.iterdir()) == []


def test_offline_flag_names_the_place_for_the_file(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root, requests = server
    sha = make_file(root)
    cache = tmp_path / "cache"
    monkeypatch.setenv("EOKIT_OFFLINE", "1")
    monkeypatch.setenv("EOKIT_CACHE_DIR", str(cache))
    spec = WeightsSpec("tiny", f"{url}/model.safetensors", sha)
    with pytest.raises(InputError, match=r"EOKIT_OFFLINE=1.*cache[/\\]model.safetensors"):
        resolve_weights(spec, progress=False)
    assert requests == []

    # the user copies the file there by hand: found and verified, still offline
    cache.mkdir()
    (cache / "model.safetensors").write_bytes((root / "model.safetensors").read_bytes())
    assert resolve_weights(spec, progress=False) == cache / "model.safetensors"


def test_corrupt_cached_file_is_reported(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "w.bin").write_bytes(b"truncated")
    spec = WeightsSpec("w", "http://127.0.0.1:9/w.bin", "a" * 64)
    with pytest.raises(InputError, match="w.bin.*delete the file"):
        resolve_weights(spec, cache_dir=cache, offline=True)


def test_missing_remote_file_and_local_paths(
    server: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    url, _, _ = server
    spec = WeightsSpec("gone", f"{url}/gone.pt", "b" * 64)
    with pytest.raises(InputError, match="failed.*gone.pt"):
        resolve_weights(spec, cache_dir=tmp_path / "c", offline=False, progress=False)
    assert not (tmp_path / "c" / "gone.pt").exists()

    local = tmp_path / "mine.safetensors"
    local.write_bytes(b"x")
    assert resolve_weights(local) == local
    with pytest.raises(InputError, match="not found"):
        resolve_weights(tmp_path / "nope.safetensors")
    with pytest.raises(InputError, match="folder"):
        resolve_weights(tmp_path)
    with pytest.raises(InputError, match="sha256"):
        resolve_weights(f"{url}/x.pt")
    with pytest.raises(InputError, match="64 hex"):
        resolve_weights(WeightsSpec("x", f"{url}/x.pt", "abc"), cache_dir=tmp_path)


def test_hub_offline_holds_the_hub_to_its_cache_only_while_eokit_is_offline(monkeypatch) -> None:
    import huggingface_hub.constants as hub

    from eokit.core.weights import hub_offline

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("EOKIT_OFFLINE", raising=False)
    with hub_offline():
        assert hub.HF_HUB_OFFLINE is False
    monkeypatch.setenv("EOKIT_OFFLINE", "1")
    with hub_offline():
        assert hub.HF_HUB_OFFLINE is True
    assert hub.HF_HUB_OFFLINE is False  # restored
    with hub_offline(offline=False):
        assert hub.HF_HUB_OFFLINE is False
