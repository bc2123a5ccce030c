"""Download, verify and cache published weights, against a local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from mobilesam import MobileSAM, WeightsUnavailableError, weights
from mobilesam.cli import main


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncate: set[str] = set()
    hits: list[str] = []

    def do_GET(self):
        self.hits.append(self.path)
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.files:
            self.send_error(404)
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A truncated transfer: the connection closes halfway through the announced length.
        self.wfile.write(body[: len(body) // 2] if name in self.truncate else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.files, _Handler.truncate, _Handler.hits = {}, set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def published(monkeypatch, tmp_path, ckpt_vit_t):
    """Make the vit_t record describe a generated checkpoint; isolate the cache."""
    data = Path(ckpt_vit_t).read_bytes()
    record = dataclasses.replace(
        weights.WEIGHTS["vit_t"],
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        urls=("http://127.0.0.1:9/unreachable/mobile_sam.pt",),
    )
    monkeypatch.setitem(weights.WEIGHTS, "vit_t", record)
    monkeypatch.setenv("MOBILESAM_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MOBILESAM_OFFLINE", raising=False)
    return record, data


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*")) if cache.exists() else []


def test_published_records():
    t = weights.WEIGHTS["vit_t"]
    assert t.sha256 == "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
    assert t.size == 40_728_226 and len(t.urls) == 2
    assert weights.WEIGHTS["vit_h"].urls == (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    )
    assert {w.model_type for w in weights.WEIGHTS.values()} == {"vit_t", "vit_b", "vit_l", "vit_h"}


def test_download_success_then_cached(server, published, monkeypatch, tmp_path):
    url, handler = server
    record, data = published
    handler.files[record.filename] = data
    monkeypatch.setenv("MOBILESAM_WEIGHTS_MIRROR", url)
    path = weights.ensure_weights("vit_t")
    assert path == tmp_path / "cache" / record.filename
    assert path.read_bytes() == data
    assert _leftovers(path.parent) == [record.filename]
    hits = len(handler.hits)
    assert weights.ensure_weights("vit_t") == path
    assert len(handler.hits) == hits  # served from the cache
    sam = MobileSAM(device="cpu")  # no checkpoint: the cached published weights
    assert torch.equal(
        sam.model.state_dict()["mask_decoder.iou_token.weight"],
        torch.load(path, weights_only=True)["mask_decoder.iou_token.weight"],
    )


def test_falls_back_to_next_url(server, published, monkeypatch):
    url, handler = server
    record, data = published
    handler.files[record.filename] = data
    bad = dataclasses.replace(record, urls=(url + "/missing/nothing.pt", url + "/ok/" + record.filename))
    monkeypatch.setitem(weights.WEIGHTS, "vit_t", bad)
    assert weights.ensure_weights("vit_t").read_bytes() == data


def test_wrong_hash_is_rejected(server, published, monkeypatch, tmp_path):
    url, handler = server
    record, data = published
    handler.files[record.filename] = data[:-4] + b"XXXX"  # same size, other bytes
    monkeypatch.setenv("MOBILESAM_WEIGHTS_MIRROR", url)
    with pytest.raises(WeightsUnavailableError, match="SHA-256") as err:
        weights.ensure_weights("vit_t")
    assert "put it at" in str(err.value)
    assert _leftovers(tmp_path / "cache") == []


def test_interrupted_download_leaves_nothing(server, published, monkeypatch, tmp_path):
    url, handler = server
    record, data = published
    handler.files[record.filename] = data
    handler.truncate.add(record.filename)
    monkeypatch.setenv("MOBILESAM_WEIGHTS_MIRROR", url)
    with pytest.raises(WeightsUnavailableError):
        weights.ensure_weights("vit_t")
    assert _leftovers(tmp_path / "cache") == []


def test_damaged_cache_is_replaced(server, published, monkeypatch, tmp_path):
    url, handler = server
    record, data = published
    handler.files[record.filename] = data
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / record.filename).write_bytes(data[:1000])  # truncated earlier
    monkeypatch.setenv("MOBILESAM_WEIGHTS_MIRROR", url)
    assert weights.ensure_weights("vit_t").read_bytes() == data


def test_offline_never_touches_network(server, published, monkeypatch, capsys):
    url, handler = server
    record, data = published
    handler.files[record.filename] = data
    monkeypatch.setenv("MOBILESAM_WEIGHTS_MIRROR", url)
    monkeypatch.setenv("MOBILESAM_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="MOBILESAM_OFFLINE") as err:
        weights.ensure_weights("vit_t")
    assert record.urls[0] in str(err.value) and "checkpoint=PATH" in str(err.value)
    assert handler.hits == []
    assert main(["weights", "download"]) == 2
    assert "not cached" in capsys.readouterr().err


def test_offline_uses_verified_cache(published, monkeypatch, tmp_path):
    record, data = published
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / record.filename).write_bytes(data)
    monkeypatch.setenv("MOBILESAM_OFFLINE", "1")
    assert weights.ensure_weights("vit_t").read_bytes() == data


def test_unreachable_gives_one_clear_message(published):
    with pytest.raises(WeightsUnavailableError) as err:
        weights.ensure_weights("vit_t")
    msg = str(err.value)
    assert "could not download mobile_sam.pt" in msg and "127.0.0.1:9" in msg and "put it at" in msg


def test_cli_weights_list_and_path(published, capsys, tmp_path):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "mobile_sam.pt" in out and "not cached" in out and "sam_vit_h_4b8939.pth" in out
    assert main(["weights", "path", "vit_b"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / "sam_vit_b_01ec64.pth")
