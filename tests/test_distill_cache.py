"""Teacher embedding cache: once per image, resumable, bad images skipped, checksums."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from conftest import IMAGES, synthetic_state_dict, write_sa1b_tar
from PIL import Image

from mobilesam import MobileSAMError, SamPredictor, build_sam
from mobilesam.cli import main
from mobilesam.distill.cache import EmbeddingCache
from mobilesam.distill.inputs import pad_image, resize_and_pad
from mobilesam.modeling import fast_paths
from mobilesam.transforms import ResizeLongestSide


@pytest.fixture(scope="module")
def teacher():
    """A small SAM ViT-B teacher: 128 px input, 8x8 embedding grid."""
    sam = build_sam("vit_b", img_size=128)
    sam.load_state_dict(synthetic_state_dict("vit_b", img_size=128))
    return sam


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(["picture1.jpg", "picture2.jpg", "picture3.jpg", "truck.jpg", "picture4.jpg"]):
        Image.open(IMAGES / name).resize((160, 120)).save(folder / f"img{i}.jpg")
    (folder / "img9_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return folder


def test_cache_once_resume_and_failures(teacher, photos, tmp_path):
    cache_dir = tmp_path / "cache"
    calls = []

    def stop_after_three(msg):
        calls.append(msg)
        if sum("cached" in m for m in calls) == 3:
            raise KeyboardInterrupt  # killed mid-run

    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache(cache_dir).build(teacher, photos, "vit_b", shard_size=2, progress=stop_after_three)
    assert len(EmbeddingCache(cache_dir)) == 2  # the full shard survived; the third image was in progress

    summary = EmbeddingCache(cache_dir).build(teacher, photos, "vit_b", shard_size=2)
    assert (summary.done, summary.skipped) == (3, 2)
    assert list(summary.failed) == ["img9_broken.jpg"]
    cache = EmbeddingCache(cache_dir)
    assert cache.ids() == [f"img{i}.jpg" for i in range(5)]  # every good image exactly once
    assert json.loads((cache_dir / "index.json").read_text())["failures"].keys() == {"img9_broken.jpg"}

    again = EmbeddingCache(cache_dir).build(teacher, photos, "vit_b", shard_size=2)
    assert (again.done, again.skipped) == (0, 5)  # a rerun does nothing new

    predictor = SamPredictor(teacher)
    predictor.set_image(np.asarray(Image.open(photos / "img3.jpg").convert("RGB")))
    expected = predictor.get_image_embedding()[0].half().numpy()
    got = cache.get("img3.jpg")
    assert got.shape == (256, 8, 8) and got.dtype == np.float16
    np.testing.assert_array_equal(got, expected)


def test_damaged_shard_is_detected(teacher, photos, tmp_path):
    EmbeddingCache(tmp_path).build(teacher, photos, "vit_b", shard_size=8)
    shard = tmp_path / "shard_00000.npy"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    cache = EmbeddingCache(tmp_path)
    assert cache.verify() == ["shard_00000.npy"]
    cache.get("img0.jpg")  # rows before the damage still read
    with pytest.raises(MobileSAMError, match="damaged"):
        cache.get("img4.jpg")  # the last row holds the flipped byte
    assert main(["distill", "cache", "--verify", "--cache", str(tmp_path)]) == 1


def test_other_teacher_refused(teacher, photos, tmp_path):
    EmbeddingCache(tmp_path).build(teacher, photos, "vit_b")
    with pytest.raises(MobileSAMError, match="another cache folder"):
        EmbeddingCache(tmp_path).build(teacher, photos, "vit_h")
    (tmp_path / "a_file").write_text("kept")  # a file where the cache folder should be: said, kept
    with pytest.raises(MobileSAMError, match=r"output folder .*a_file is a file"):
        EmbeddingCache(tmp_path / "a_file").build(teacher, photos, "vit_b")
    assert (tmp_path / "a_file").read_text() == "kept"
    # No images (an empty folder, a tar of annotations only): said, not "cached 0"
    (tmp_path / "empty").mkdir()
    with tarfile.open(tmp_path / "empty" / "sa_1.tar", "w") as tar:
        tar.addfile(tarfile.TarInfo("sa_1.json"), io.BytesIO(b""))
    for source in (tmp_path / "empty" / "sa_1.tar", tmp_path / "empty"):
        with pytest.raises(MobileSAMError, match=f"no images in {source}"):
            EmbeddingCache(tmp_path / "c_empty").build(teacher, source, "vit_b")


def test_sa1b_tar_shards_and_cli(teacher, tmp_path, capsys):
    """SA-1B layout: sa_*.tar with .jpg and .json, read without unpacking."""
    ckpt = tmp_path / "teacher.pth"
    torch.save(teacher.state_dict(), ckpt)
    shards = tmp_path / "sa1b"
    shards.mkdir()
    with tarfile.open(shards / "sa_000000.tar", "w") as tar:
        for i in range(2):
            buf = io.BytesIO()
            Image.open(IMAGES / "picture1.jpg").resize((100, 80)).save(buf, "JPEG")
            for name, data in ((f"sa_{i}.jpg", buf.getvalue()), (f"sa_{i}.json", b'{"annotations": []}')):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    args = [
        "distill",
        "cache",
        "--teacher",
        f"vit_b:{ckpt}",
        "--images",
        str(shards),
        "--cache",
        str(tmp_path / "c"),
        "--img-size",
        "128",
        "--resize",
        "device",
    ]
    assert main(args) == 0
    assert EmbeddingCache(tmp_path / "c").ids() == ["sa_000000.tar/sa_0.jpg", "sa_000000.tar/sa_1.jpg"]
    # the one-process engine's options are refused with Ray, not ignored
    assert main([*args, "--compile", "--engine", "ray"]) != 0
    assert "--resize: options of the one-process engine" in capsys.readouterr().err
    assert main([*args[:-2], "--workers", "0", "--engine", "ray"]) != 0  # 0 is given, not absent
    assert "--workers: options of the one-process engine" in capsys.readouterr().err
    assert main([*args, "--flex-attention"]) != 0
    assert "flex_attention needs compile" in capsys.readouterr().err


def test_a_damaged_tar_shard_is_reported_and_the_rest_cached(teacher, tmp_path):
    """SA-1B downloads get cut short: a shard cut in the middle of an image keeps the images
    before the damage; the damaged image, the shard's unreadable rest and a file that is no
    tar at all are failures naming it, and the other shards are cached (the whole run
    stopped at the listing)."""
    shards = tmp_path / "sa1b"
    shards.mkdir()
    write_sa1b_tar(shards / "sa_0.tar", range(2))
    cut = write_sa1b_tar(shards / "sa_1.tar", range(10, 13))
    with tarfile.open(cut) as tar:
        third = tar.getmember("sa_12.jpg")
    cut.write_bytes(cut.read_bytes()[: third.offset_data + 300])  # inside sa_12.jpg's bytes
    (shards / "sa_2.tar").write_text("<html>503 Service Unavailable</html>")
    summary = EmbeddingCache(tmp_path / "c").build(teacher, shards, "vit_b")
    assert EmbeddingCache(tmp_path / "c").ids() == [f"sa_0.tar/sa_{i}.jpg" for i in (0, 1)] + [
        f"sa_1.tar/sa_{i}.jpg" for i in (10, 11)
    ]
    assert sorted(summary.failed) == ["sa_1.tar/...", "sa_1.tar/sa_12.jpg", "sa_2.tar/..."]
    assert f"cannot read tar shard {cut} after sa_12.jpg" in summary.failed["sa_1.tar/..."]
    assert "cannot read tar shard" in summary.failed["sa_2.tar/..."]


def test_batched_cache_with_workers_matches_one_at_a_time(teacher, photos, tmp_path):
    """Batches of 3 decoded by 2 worker processes (the broken image in a batch with good
    ones): the same entries and failures, embeddings equal up to float16 rounding."""
    one = EmbeddingCache(tmp_path / "one")
    one.build(teacher, photos, "vit_b")
    many = EmbeddingCache(tmp_path / "many")
    summary = many.build(teacher, photos, "vit_b", shard_size=4, batch_size=3, workers=2)
    assert (summary.done, list(summary.failed)) == (5, ["img9_broken.jpg"])
    assert many.ids() == one.ids()
    for image_id in one.ids():
        np.testing.assert_allclose(
            many.get(image_id).astype(np.float32), one.get(image_id).astype(np.float32), rtol=2e-3, atol=2e-3
        )


def test_bf16_teacher_cache_is_close_to_float32(teacher, photos, tmp_path):
    """The bf16 autocast path (the default on a GPU) run on the CPU: embeddings close to
    float32's; an unknown precision is refused before any work."""
    EmbeddingCache(tmp_path / "fp32").build(teacher, photos, "vit_b", precision="float32")
    EmbeddingCache(tmp_path / "bf16").build(teacher, photos, "vit_b", precision="bf16")
    fp32, bf16 = EmbeddingCache(tmp_path / "fp32"), EmbeddingCache(tmp_path / "bf16")
    assert fp32.ids() == bf16.ids() and len(fp32) == 5
    for image_id in fp32.ids():
        a, b = fp32.get(image_id).astype(np.float32), bf16.get(image_id).astype(np.float32)
        assert not np.array_equal(a, b)  # bf16 really ran
        assert np.abs(a - b).max() < 0.1 * np.abs(a).max()
    with pytest.raises(MobileSAMError, match="precision"):
        EmbeddingCache(tmp_path / "bad").build(teacher, photos, "vit_b", precision="fp8")


@pytest.mark.parametrize("hw", [(1200, 1800), (80, 100), (1, 1), (64, 128), (128, 96)])
def test_resize_on_the_device_matches_the_workers(hw):
    """`resize_and_pad` (the GPU's default, run here on CPU tensors) against PIL in the
    workers: shrinking, enlarging, 1 pixel, already at size; the same (h, w), the same
    padding, pixels within 1 (PIL's fixed-point weights)."""
    size = 128
    image = np.asarray(Image.open(IMAGES / "truck.jpg").convert("RGB").resize(hw[::-1]))
    transform = ResizeLongestSide(size)
    expected = [
        pad_image(transform.apply_image(image), size),
        pad_image(transform.apply_image(image[::-1]), size),
    ]
    got, sizes = resize_and_pad(
        [torch.from_numpy(image), torch.from_numpy(image[::-1].copy())], size, torch.device("cpu")
    )
    assert got.shape == (2, 3, size, size) and got.dtype == torch.uint8
    for i, (padded, hw_resized) in enumerate(expected):
        assert sizes[i].tolist() == hw_resized.tolist()
        diff = (got[i].int() - padded.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.01
        h, w = hw_resized.tolist()
        assert not got[i, :, h:].any() and not got[i, :, :, w:].any()
    empty, no_sizes = resize_and_pad([], size, torch.device("cpu"))
    assert empty.shape == (0, 3, size, size) and no_sizes.shape == (0, 2)


def test_cache_with_resize_on_the_device(teacher, photos, tmp_path):
    """The GPU's default path on a CPU, through a decoding process: the workers only decode,
    bad images are still reported, the embeddings agree with the exact (PIL) cache."""
    exact = EmbeddingCache(tmp_path / "exact")
    exact.build(teacher, photos, "vit_b")
    summary = EmbeddingCache(tmp_path / "device").build(teacher, photos, "vit_b", workers=1, resize="device")
    assert (summary.done, list(summary.failed)) == (5, ["img9_broken.jpg"])
    device = EmbeddingCache(tmp_path / "device")
    for image_id in exact.ids():
        ref, got = exact.get(image_id).astype(np.float32), device.get(image_id).astype(np.float32)
        assert np.abs(got - ref).max() <= 0.01 * np.abs(ref).max()  # 0.3% measured
    with pytest.raises(MobileSAMError, match="resize must be one of"):
        EmbeddingCache(tmp_path / "bad").build(teacher, photos, "vit_b", resize="gpu")


def test_compiled_teacher_matches_eager(teacher, photos, tmp_path):
    """`compile=True` through torch.compile (the eager backend here: inductor takes minutes
    on these CPUs) with one static shape: the short last batch is padded and its padding
    dropped; the same entries, embeddings equal up to float16 rounding (the padded batch
    runs other matrix shapes)."""
    eager = EmbeddingCache(tmp_path / "eager")
    eager.build(teacher, photos, "vit_b", batch_size=2)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # reset() keeps earlier tests' counts
    with pytest.raises(MobileSAMError, match="flex_attention needs compile"):
        EmbeddingCache(tmp_path / "compiled").build(teacher, photos, "vit_b", flex_attention=True)
    assert not (tmp_path / "compiled").exists()
    with fast_paths.configured(teacher):  # the flags as they were afterwards
        summary = EmbeddingCache(tmp_path / "compiled").build(
            teacher, photos, "vit_b", batch_size=2, compile=True, compile_backend="eager", flex_attention=True
        )
        assert fast_paths.state(teacher)["flex_attention"]  # on as asked (CPU tensors: the reference path)
    assert (summary.done, list(summary.failed)) == (5, ["img9_broken.jpg"])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it went through dynamo
    compiled = EmbeddingCache(tmp_path / "compiled")
    assert compiled.ids() == eager.ids()
    for image_id in eager.ids():
        got, ref = compiled.get(image_id).astype(np.float32), eager.get(image_id).astype(np.float32)
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3)


def test_ray_cache_worker_runs_the_teacher_as_the_one_process_cache(teacher, photos, tmp_path):
    """The Ray engine's worker, called in this process as Ray calls it (decoded rows in
    batches, the broken image in one): bf16 autocast and the compiled encoder (eager
    backend, one static shape: the last batch is short) as the one-process cache runs them;
    the fragments it writes merge into the same entries. An unknown precision, or
    flex_attention without compile, is refused before Ray starts."""
    from mobilesam.distill.sources import list_images
    from mobilesam.ray_engine import CacheWorker, RayOptions, _decode_for_teacher, cache_on_ray

    reference = EmbeddingCache(tmp_path / "one")
    reference.build(teacher, photos, "vit_b", batch_size=2, precision="bf16")
    float32 = EmbeddingCache(tmp_path / "fp32")
    float32.build(teacher, photos, "vit_b")
    torch.save(teacher.state_dict(), tmp_path / "teacher.pth")
    spec = {"model_type": "vit_b", "checkpoint": str(tmp_path / "teacher.pth"), "img_size": 128}
    encoder = {"precision": "bf16", "compile": True, "compile_backend": "eager", "flex_attention": True}
    worker = CacheWorker(spec, str(tmp_path / "ray"), threads=1, batch_size=4, encoder=encoder)
    assert fast_paths.state(worker.encode.run)["flex_attention"]  # CPU tensors: the reference path
    rows = [
        _decode_for_teacher({"id": ref.id, "path": str(ref.image.path), "offset": -1, "size": -1}, 128)
        for ref in list_images(photos)
    ]
    done = []
    for start in (0, 4):  # 4 rows, then 2: the broken image and a short batch
        batch = {key: [row[key] for row in rows[start : start + 4]] for key in rows[0]}
        done += [i for i, ok in zip(batch["id"], worker(batch)["done"]) if ok]
    assert sorted(done) == reference.ids() and worker.encode.precision == "bf16"
    merged = EmbeddingCache(tmp_path / "ray")
    merged.begin("vit_b", 128)
    merged.merge_fragments()
    assert merged.ids() == reference.ids()
    for image_id in reference.ids():
        got, ref = merged.get(image_id).astype(np.float32), reference.get(image_id).astype(np.float32)
        scale = np.abs(ref).max()
        assert np.abs(got - ref).max() <= 0.02 * scale  # bf16 on other batch shapes
        assert np.abs(got - float32.get(image_id).astype(np.float32)).max() > 1e-3 * scale  # bf16 ran
    with pytest.raises(MobileSAMError, match="precision"):
        cache_on_ray(EmbeddingCache(tmp_path / "bad"), spec, "vit_b", photos, RayOptions(), precision="fp16")
    with pytest.raises(MobileSAMError, match="flex_attention needs compile"):
        cache_on_ray(
            EmbeddingCache(tmp_path / "bad"), spec, "vit_b", photos, RayOptions(), flex_attention=True
        )
