"""backbones.hub against a file server on 127.0.0.1: downloaded once into the cache (a second call makes no
request), resumed with a Range request after a cut-off, failures as one line naming the URL and the cache path with
no file left under the final name; load_weights and the torchvision source go through it."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from backbones import WeightsError, build_resnet, hub, load_weights, weights

PAYLOAD = bytes(range(256)) * 40  # 10 KiB


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no copy torchvision cached
    return tmp_path / "cache"


def test_cache_location_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("RESDET_CACHE")
    assert hub.cache_dir() == tmp_path / "torch" / "resdet"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "resdet"
    assert hub.cached_file("https://example.org:8080/a/b%20c/w.pkl?x=1") == hub.cache_dir() / "example.org_8080" / \
        "a" / "b c" / "w.pkl"  # fmt: skip


def test_downloaded_once_then_read_from_the_cache(file_server, cache: Path) -> None:
    (file_server.root / "models").mkdir()
    (file_server.root / "models" / "w.bin").write_bytes(PAYLOAD)
    url = f"{file_server.url}/models/w.bin"
    path = hub.download(url, progress=False)
    assert path.read_bytes() == PAYLOAD and path.is_relative_to(cache) and path == hub.cached_file(url)
    assert hub.download(url, progress=False) == path
    assert file_server.requests["/models/w.bin"] == 1  # the second call touched no network
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.bin", "w.bin.lock"]  # no .part left


def test_a_cut_off_download_resumes_with_a_range_request(file_server) -> None:
    (file_server.root / "w.bin").write_bytes(PAYLOAD)
    url = f"{file_server.url}/w.bin"
    file_server.cut_after = 3000
    with pytest.raises(hub.DownloadError, match=f"got 3000 of {len(PAYLOAD)} bytes") as info:
        hub.download(url, progress=False)
    final = hub.cached_file(url)
    assert not final.exists() and final.with_name("w.bin.part").stat().st_size == 3000
    assert str(final) in str(info.value)
    assert hub.download(url, progress=False).read_bytes() == PAYLOAD
    assert file_server.ranges == ["bytes=3000-"] and not final.with_name("w.bin.part").exists()


def test_failures_are_one_line_naming_the_url_and_the_cache_path(file_server) -> None:
    missing = f"{file_server.url}/nope.pkl"
    with pytest.raises(hub.DownloadError) as info:
        hub.download(missing, progress=False)
    message = str(info.value)
    assert missing in message and "HTTP 404" in message and str(hub.cached_file(missing)) in message
    assert "\n" not in message and not hub.cached_file(missing).exists()

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = f"http://127.0.0.1:{port}/w.pkl"
    with pytest.raises(hub.DownloadError) as info:
        hub.download(unreachable, progress=False, timeout=5)
    assert unreachable in str(info.value) and str(hub.cached_file(unreachable)) in str(info.value)
    final = hub.cached_file(unreachable)
    assert not final.exists() and not final.with_name("w.pkl.part").exists()


def test_load_weights_takes_a_url(file_server) -> None:
    source = build_resnet(18, base_width=8)
    torch.save(source.state_dict(), file_server.root / "r18.pth")
    model = build_resnet(18, base_width=8)
    load_weights(model, f"{file_server.url}/r18.pth")
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    with pytest.raises(WeightsError, match="HTTP 404"):
        load_weights(model, f"{file_server.url}/missing.pth")


def test_torchvision_weights_go_through_the_cache_with_their_hash_checked(file_server, monkeypatch) -> None:
    source = build_resnet(18, base_width=8)
    torch.save(source.state_dict(), file_server.root / "tmp.pth")
    digest = hashlib.sha256((file_server.root / "tmp.pth").read_bytes()).hexdigest()
    (file_server.root / "tmp.pth").rename(file_server.root / f"resnet18-{digest[:8]}.pth")
    good = f"{file_server.url}/resnet18-{digest[:8]}.pth"
    monkeypatch.setattr(weights, "torchvision_weights", lambda depth, variant="": SimpleNamespace(url=good))
    model = build_resnet(18, base_width=8)
    load_weights(model, "torchvision")
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert weights.torchvision_weights_file(18).is_file()

    wrong = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    (file_server.root / f"resnet18-{digest[:8]}.pth").rename(file_server.root / f"resnet18-{wrong}.pth")
    bad = f"{file_server.url}/resnet18-{wrong}.pth"
    monkeypatch.setattr(weights, "torchvision_weights", lambda depth, variant="": SimpleNamespace(url=bad))
    with pytest.raises(WeightsError, match="expected SHA-256") as info:
        load_weights(build_resnet(18, base_width=8), "torchvision")
    assert bad in str(info.value) and not hub.cached_file(bad).exists()
