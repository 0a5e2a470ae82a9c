"""MNIST files: parsing, verification, layouts, download through an injected fetcher, batches."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, idx_bytes, write_gz
from lenet5.data import (FILES, MIRRORS, EpochPlan, download, find_file, load_mnist, normalize,
                         parse_idx, shift, split_validation, verify)
from lenet5.errors import DataError
from lenet5.data import MEAN, STD


def test_parse_idx_reads_synthetic_images():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = parse_idx(idx_bytes(a), "x", 2051, (2, 3, 4))
    assert np.array_equal(out, a)


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b[:5], "truncated"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\0", "longer than its header"),
    (lambda b: b"\0\0\x08\x01" + b[4:], "wrong magic"),
])
def test_parse_idx_rejects_damage(mangle, message):
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    with pytest.raises(DataError, match=message):
        parse_idx(mangle(idx_bytes(a)), "x", 2051, (2, 3, 4))


def test_parse_idx_rejects_wrong_dimensions():
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    with pytest.raises(DataError, match="dimensions"):
        parse_idx(idx_bytes(a), "x", 2051, (2, 28, 28))


def test_real_files_verify(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.dtype == torch.int64
    assert int(mnist.test_labels[0]) == 7 and int(mnist.train_labels[0]) == 5
    # the set's well-known statistics, which the default normalisation uses
    x = mnist.train_images.float() / 255
    assert abs(x.mean().item() - 0.1307) < 1e-4 and abs(x.std().item() - 0.3081) < 1e-4


def test_tampered_file_fails_checksum_naming_the_file(raw_copy):
    path = raw_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a valid label file, silently wrong data
    write_gz(path, bytes(raw))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: MD5 .* does not match"):
        verify(path, "t10k-labels-idx1-ubyte")


def test_truncated_gzip_is_a_clear_error(raw_copy):
    path = raw_copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot be read"):
        load_mnist(raw_copy, download_missing=False)


def test_wrong_kind_of_file_is_a_clear_error(raw_copy):
    raw = raw_copy / "MNIST" / "raw"
    shutil.copy(raw / "t10k-labels-idx1-ubyte.gz", raw / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="wrong magic number"):
        verify(raw / "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte")


def test_plain_folder_and_uncompressed_files(tmp_path):
    for name in FILES:
        src = DATA / "MNIST" / "raw" / f"{name}.gz"
        if name.startswith("t10k"):
            (tmp_path / name).write_bytes(gzip.decompress(src.read_bytes()))  # uncompressed
        else:
            shutil.copy(src, tmp_path / f"{name}.gz")
    assert find_file(tmp_path, "t10k-images-idx3-ubyte") == tmp_path / "t10k-images-idx3-ubyte"
    data = load_mnist(tmp_path, download_missing=False)
    assert data.test_images.shape == (10000, 28, 28)


def test_missing_files_offline_message(tmp_path):
    with pytest.raises(DataError, match=r"put the four \*-ubyte.gz files in .*MNIST/raw/"):
        load_mnist(tmp_path, download_missing=False)


def _mirror_fetcher(served: dict[str, Path], calls: list[str]):
    """A fetcher serving local files by URL; anything else fails like a network error."""
    def fetch(url, dest, progress):
        calls.append(url)
        if url not in served:
            raise OSError(f"connection refused: {url}")
        data = served[url].read_bytes()
        dest.write_bytes(data)
        progress(len(data), len(data))
    return fetch


def test_download_falls_back_to_second_mirror_and_verifies(tmp_path):
    served = {f"{MIRRORS[1]}{n}.gz": DATA / "MNIST" / "raw" / f"{n}.gz" for n in FILES}
    calls = []
    data = load_mnist(tmp_path, fetch=_mirror_fetcher(served, calls))
    assert data.train_images.shape == (60000, 28, 28)
    assert calls[0].startswith(MIRRORS[0])  # the first mirror was tried first
    # and, once it failed every attempt, not again before the one that works
    assert [u for u in calls if u.startswith(MIRRORS[0])] == [calls[0]] * 3
    raw = tmp_path / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{n}.gz" for n in FILES)  # no temp files


def test_download_refuses_a_bad_file_and_leaves_nothing(tmp_path):
    bad = write_gz(tmp_path / "bad.gz", b"not mnist at all")
    name = "t10k-labels-idx1-ubyte"
    served = {f"{m}{name}.gz": bad for m in MIRRORS}
    with pytest.raises(DataError, match=f"could not download {name}.gz"):
        download(tmp_path / "root", [name], fetch=_mirror_fetcher(served, []), show_progress=False)
    assert list((tmp_path / "root" / "MNIST" / "raw").iterdir()) == []


def test_download_offline_says_where_to_put_files(tmp_path):
    with pytest.raises(DataError, match="copy the four MNIST"):
        download(tmp_path, ["t10k-labels-idx1-ubyte"], fetch=_mirror_fetcher({}, []), retries=1,
                 show_progress=False)


def test_download_over_file_urls(tmp_path):
    """The real urllib fetcher, against a file:// mirror."""
    mirror = (DATA / "MNIST" / "raw").as_uri() + "/"
    download(tmp_path, ["t10k-labels-idx1-ubyte"], mirrors=(mirror,), show_progress=False)
    verify(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte")


def test_validation_split_is_fixed_and_disjoint():
    x = torch.arange(100).reshape(100, 1, 1).to(torch.uint8).expand(100, 28, 28)
    y = torch.arange(100)
    (tx, ty), (vx, vy) = split_validation(x, y, 20, seed=0)
    (_, ty2), (_, vy2) = split_validation(x, y, 20, seed=0)
    assert len(vy) == 20 and len(ty) == 80 and torch.equal(vy, vy2)
    assert not set(ty.tolist()) & set(vy.tolist())


def test_normalize_and_shift():
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    img[0, 10, 12] = 255
    x = normalize(img)
    assert x.shape == (1, 1, 28, 28)
    assert torch.isclose(x[0, 0, 10, 12], torch.tensor((1 - 0.1307) / 0.3081))
    moved = shift(img.expand(2, 28, 28), torch.tensor([[2, -1], [0, 0]]), 2)
    assert moved[0, 12, 11] == 255 and moved[0].sum() == 255  # down 2, left 1
    assert torch.equal(moved[1], img[0])


def test_epoch_plan_covers_every_image_once_and_shards_across_ranks():
    g = torch.Generator().manual_seed(0)
    plan = EpochPlan(103, 10, 0, g, torch.device("cpu"))
    images = torch.arange(103).to(torch.uint8).reshape(103, 1, 1).expand(103, 28, 28).contiguous()
    labels = torch.arange(103)
    seen = []
    for step in range(plan.steps):
        shards = [plan.batch(step, images, labels, 0.0, 1.0, rank, 2)[1] for rank in range(2)]
        assert abs(len(shards[0]) - len(shards[1])) <= 1
        seen += torch.cat(shards).tolist()
    assert sorted(seen) == list(range(103))


def test_whole_epoch_at_once_is_every_batch_in_order(mnist):
    """What a CUDA epoch uses instead of one batch() per step: the same values, bit for bit."""
    images, labels = mnist.train_images[:1000], mnist.train_labels[:1000]
    plan = EpochPlan(1000, 64, 2, torch.Generator().manual_seed(3), torch.device("cpu"))
    x_all, y_all = plan.whole(images, labels, MEAN, STD)
    assert x_all.shape == (1000, 1, 28, 28)
    for step in range(plan.steps):  # 15 full batches and a short one of 40
        x, y = plan.batch(step, images, labels, MEAN, STD)
        assert torch.equal(x, x_all[step * 64:(step + 1) * 64]) and torch.equal(y, y_all[step * 64:(step + 1) * 64])


def gzip_of_zeros(path: Path, size: int, head: bytes = b"") -> Path:
    """`head` then `size` zero bytes, gzipped: a few hundred KB on disk for hundreds of MB inside."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(packer.compress(head))
        for _ in range(size >> 20):
            f.write(packer.compress(chunk))
        f.write(packer.flush())
    return path


@pytest.mark.parametrize("head, message", [
    (b"", "wrong magic number"),  # zeros from the first byte
    (idx_bytes(np.zeros(10000, np.uint8))[:8], "longer than its header says"),  # a right header, then more
])
def test_a_gzip_bomb_is_refused_after_reading_only_what_its_header_allows(tmp_path, head, message):
    import tracemalloc

    path = gzip_of_zeros(tmp_path / "t10k-labels-idx1-ubyte.gz", 256 << 20, head)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=message):
            verify(path, "t10k-labels-idx1-ubyte")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # the real file is 10,008 bytes; reading it all would cost 256 MB


def test_damaged_deflate_data_is_a_clear_error(raw_copy):
    path = raw_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[40:60] = b"\xff" * 20  # inside the compressed stream: zlib, not gzip, notices
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: cannot be read"):
        verify(path, "t10k-labels-idx1-ubyte")


def test_batches_made_ahead_are_each_steps_own(mnist):
    """Without per-step drawing a CPU epoch makes its batches AHEAD_ROWS at a time: every step,
    the last short one too, is exactly what that step's own pass makes, at any batch size."""
    from lenet5.data import EpochPlan

    x, y = mnist.train_images[:10_000].contiguous(), mnist.train_labels[:10_000]
    for size, shift in ((64, 0), (100, 2), (3000, 0)):
        ahead = EpochPlan(len(x), size, shift, torch.Generator().manual_seed(1), torch.device("cpu"))
        own = EpochPlan(len(x), size, shift, torch.Generator().manual_seed(1), torch.device("cpu"))
        for step in [*range(ahead.steps - 1, -1, -3), 0, 1]:  # backwards, then again from the start
            got = ahead.batch(step, x, y, 0.1307, 0.3081)
            want = own._cut(slice(step * size, (step + 1) * size), x, y, 0.1307, 0.3081)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (size, step)
