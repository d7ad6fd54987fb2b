from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jfb_core.data import (BUNDLED_PHOTOS, CELEBA_ENV, SPLITS, CelebAFolder, bundled_images,
                           find_celeba_images, measure, photo_names)
from jfb_core.operators import GaussianBlur


def test_splits_use_disjoint_photographs_and_faces_are_test():
    sets = {s: set(photo_names(s)) for s in SPLITS}
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    assert sets["test"] == {"astronaut", "grace_hopper"}
    assert set().union(*sets.values()) == {p.name for p in BUNDLED_PHOTOS}


def test_bundled_images_are_deterministic_and_in_range():
    a = bundled_images("val", size=16, n=10, seed=3)
    b = bundled_images("val", size=16, n=10, seed=3)
    assert a.shape == (10, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, bundled_images("val", size=16, n=10, seed=4))
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_bundled_splits_share_no_crop():
    tr = bundled_images("train", size=16)
    te = bundled_images("test", size=16)
    dist = torch.cdist(te.flatten(1), tr.flatten(1))
    assert float(dist.min()) > 1e-3


def test_asking_for_too_many_crops_is_an_error():
    with pytest.raises(ValueError, match="asked for"):
        bundled_images("test", size=32, n=10_000)
    with pytest.raises(ValueError):
        bundled_images("holdout")


def _fake_celeba(root: Path, numbers, doubled=False, size=(178, 218)) -> Path:
    d = root / "img_align_celeba"
    if doubled:
        d = d / "img_align_celeba"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in numbers:
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"{n:06d}.jpg")
    return root


def test_celeba_paper_split(tmp_path):
    root = _fake_celeba(tmp_path, [1, 2, 7999, 8000, 8001, 9999, 10000, 10001])
    train = CelebAFolder(root, "train", size=32)
    test = CelebAFolder(root, "test", size=32)
    assert [p.name for p in train.files] == ["000001.jpg", "000002.jpg", "007999.jpg", "008000.jpg"]
    assert [p.name for p in test.files] == ["008001.jpg", "009999.jpg", "010000.jpg"]
    x = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1


def test_celeba_official_split_and_doubled_layout(tmp_path):
    root = _fake_celeba(tmp_path, [5, 162770, 162771, 182638], doubled=True)
    assert find_celeba_images(root).name == "img_align_celeba"
    assert len(CelebAFolder(root, "train", subset="official", size=16)) == 2
    assert len(CelebAFolder(root, "val", subset="official", size=16)) == 1
    assert len(CelebAFolder(root, "test", subset="official", size=16)) == 1
    with pytest.raises(ValueError, match="does not exist in the paper subset"):
        CelebAFolder(root, "val", subset="paper")


def test_celeba_resizes_whole_image_like_the_paper(tmp_path):
    root = tmp_path / "c"
    d = root / "img_align_celeba"
    d.mkdir(parents=True)
    arr = np.zeros((218, 178, 3), dtype=np.uint8)
    arr[:109] = 255  # top half white: must stay the top half after a whole-image resize
    Image.fromarray(arr).save(d / "000001.png")
    x = CelebAFolder(root, "train", size=64)[0]
    assert float(x[:, :30].mean()) > 0.95 and float(x[:, 34:].mean()) < 0.05


def test_celeba_errors_say_what_was_expected(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CelebAFolder(tmp_path / "missing", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        CelebAFolder(tmp_path / "empty", "train")
    monkeypatch.delenv(CELEBA_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=CELEBA_ENV):
        CelebAFolder(None, "train")
    root = _fake_celeba(tmp_path / "few", [3])
    with pytest.raises(FileNotFoundError, match="no image of the paper test split"):
        CelebAFolder(root, "test")


def test_corrupt_image_names_the_file(tmp_path):
    root = _fake_celeba(tmp_path, [1])
    (root / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    ds = CelebAFolder(root, "train", size=16)
    with pytest.raises(ValueError, match="000002.jpg"):
        ds[1]


def test_measurements_are_deterministic_per_image_index():
    A = GaussianBlur(5, 1.0)
    x = torch.rand(4, 3, 16, 16)
    full = measure(A, x, 0.01, seed=7, indices=[10, 11, 12, 13])
    part = measure(A, x[2:], 0.01, seed=7, indices=[12, 13])
    torch.testing.assert_close(full[2:], part, rtol=0, atol=0)
    noise = full - A(x)
    assert 0.008 < float(noise.std()) < 0.012
    assert not torch.equal(full, measure(A, x, 0.01, seed=8, indices=[10, 11, 12, 13]))


def test_cache_split_takes_val_from_the_tail_of_the_training_split():
    from jfb_core.data import cache_split

    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    cache = {"images": images, "ids": torch.tensor([10, 11, 12, 13, 14, 15]), "size": 2,
             "splits": {"train": torch.tensor([0, 1, 2, 3]), "test": torch.tensor([4, 5])}}
    x, ids = cache_split(cache, "val", 2)
    assert ids == [12, 13] and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0, 0, 0], torch.tensor([2.0, 3.0]) / 255)
    assert cache_split(cache, "train", 3)[1] == [10, 11, 12]
    assert cache_split(cache, "test")[1] == [14, 15]
    with pytest.raises(ValueError, match="tail"):
        cache_split(cache, "val")
    with pytest.raises(ValueError, match="not in"):
        cache_split(cache, "extra", 1)
    with pytest.raises(ValueError, match="at least 1"):
        cache_split(cache, "train", 0)
