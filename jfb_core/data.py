"""Images and measurements: the bundled offline set, a CelebA folder loader, d = A x + eps.

Nothing here downloads anything.

Bundled images
--------------
Photographs that ship inside packages the course installs (scikit-image,
scikit-learn, matplotlib), split *by source photo* so that no photograph feeds
two splits. The two portraits (astronaut Eileen Collins and Grace Hopper) are the
test split, so the test images are faces, like CelebA's. Credits are in
:data:`BUNDLED_PHOTOS`; the two scikit-learn photographs are CC BY 2.0.

CelebA
------
:class:`CelebAFolder` reads ``img_align_celeba/*.jpg`` from a folder the user gives.
Splits follow the image number in the file name: the official partition
(train 1-162770, valid 162771-182637, test 182638-202599), or the paper's subset
of the first 10,000 images (first 8,000 train, last 2,000 test).
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from jfb_core.errors import BadDataCache, UserError
from jfb_core.operators import LinearOperator, add_noise
from jfb_core.provenance import save_atomic

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Photo:
    name: str
    package: str
    split: str
    credit: str
    licence: str


#: Every bundled photograph, its split and its credit.
BUNDLED_PHOTOS: tuple[Photo, ...] = (
    Photo("chelsea", "skimage", "train", "Stefan van der Walt (scikit-image)", "CC0"),
    Photo("coffee", "skimage", "train", "Rachel Michetti, courtesy of Pikolo Espresso Bar (scikit-image)", "CC0"),
    Photo("rocket", "skimage", "train", "SpaceX, DSCOVR launch on Falcon 9 (scikit-image)", "public domain"),
    Photo("hubble_deep_field", "skimage", "train", "NASA, Hubble eXtreme Deep Field (scikit-image)", "public domain"),
    Photo("immunohistochemistry", "skimage", "train", "scikit-image sample data", "no known copyright restrictions"),
    Photo("china", "sklearn", "train", "danielbuechele on Flickr (scikit-learn)", "CC BY 2.0"),
    Photo("flower", "sklearn", "train", "vultilion on Flickr (scikit-learn)", "CC BY 2.0"),
    Photo("motorcycle", "skimage", "val", "Middlebury stereo data set, left view (scikit-image)", "see scikit-image"),
    Photo("retina", "skimage", "val", "Häggström, fundus photograph via Wikimedia (scikit-image)", "CC0"),
    Photo("astronaut", "skimage", "test", "NASA, Eileen Collins (scikit-image)", "public domain"),
    Photo("grace_hopper", "matplotlib", "test", "US Navy, Grace Hopper (matplotlib)", "public domain"),
)


def photo_names(split: str | None = None) -> list[str]:
    """Names of the bundled photographs, all or those of one split."""
    if split is not None and split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    return [p.name for p in BUNDLED_PHOTOS if split is None or p.split == split]


def _load_raw(name: str) -> np.ndarray:
    """The photograph as an (H, W, 3) uint8 array, read from the installed package."""
    if name == "china" or name == "flower":
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    if name == "grace_hopper":
        import matplotlib.cbook
        import matplotlib.image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(matplotlib.image.imread(f, format="jpg"))
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    if name not in photo_names():
        raise UserError(f"unknown bundled photograph {name!r}; choose one of {photo_names()}")
    return getattr(skimage.data, name)()


@functools.lru_cache(maxsize=32)
def _photo_cached(name: str, short_side: int) -> np.ndarray:
    from skimage.transform import resize

    img = _load_raw(name)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3].astype(np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    out = resize(img, (max(short_side, round(h * scale)), max(short_side, round(w * scale))),
                 anti_aliasing=True, order=3, mode="reflect")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def bundled_photo(name: str, short_side: int = 128, square: bool = True) -> torch.Tensor:
    """One bundled photograph as a ``(1, 3, H, W)`` float32 tensor in [0, 1].

    The photograph is resized (with anti-aliasing) so its shorter side is
    ``short_side``; with ``square=True`` the centre square is kept.
    """
    if short_side < 8:
        raise UserError(f"short_side must be >= 8, got {short_side}")
    img = torch.from_numpy(_photo_cached(name, int(short_side)).copy()).permute(2, 0, 1)[None]
    if square:
        h, w = img.shape[-2:]
        top, left = (h - short_side) // 2, (w - short_side) // 2
        img = img[..., top: top + short_side, left: left + short_side]
    return img.contiguous()


def bundled_images(split: str, size: int = 32, n: int | None = None, scale: int = 4,
                   seed: int = 0) -> torch.Tensor:
    """Crops of the bundled photographs of one split: ``(N, 3, size, size)`` float32 in [0, 1].

    Each photograph of the split is resized so its shorter side is ``scale * size``
    and cut into ``size x size`` crops on a grid with stride ``size // 2``. With
    ``n`` given, ``n`` crops are drawn without replacement by a generator seeded with
    ``seed`` (all crops, shuffled, when ``n`` is None). Deterministic: the same
    arguments always give the same tensor. Splits never share a photograph.
    """
    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    if size < 8 or scale < 1:
        raise UserError(f"need size >= 8 and scale >= 1, got size={size}, scale={scale}")
    stride = max(1, size // 2)
    crops = []
    for name in photo_names(split):
        img = bundled_photo(name, short_side=scale * size, square=False)[0]
        h, w = img.shape[-2:]
        for top in range(0, h - size + 1, stride):
            for left in range(0, w - size + 1, stride):
                crops.append(img[:, top: top + size, left: left + size])
    stack = torch.stack(crops)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(stack), generator=g)
    if n is not None:
        if n > len(stack):
            raise UserError(f"split {split!r} has {len(stack)} crops of size {size} with scale "
                             f"{scale}; asked for {n} (lower n or raise scale)")
        order = order[:n]
    return stack[order].contiguous()


# --------------------------------------------------------------------------- CelebA

CELEBA_ENV = "JFB_CELEBA"
CELEBA_OFFICIAL = {"train": (1, 162770), "val": (162771, 182637), "test": (182638, 202599)}
CELEBA_PAPER = {"train": (1, 8000), "test": (8001, 10000)}
_CELEBA_NAME = re.compile(r"^(\d{6})\.(jpg|png)$", re.I)


def find_celeba_images(root: str | os.PathLike[str] | None) -> Path:
    """The directory that holds CelebA's JPEGs, given the folder the user named.

    Accepts ``root/img_align_celeba/*.jpg``, the doubled
    ``root/img_align_celeba/img_align_celeba/*.jpg`` of some downloads, or a path
    to ``img_align_celeba`` itself. ``root=None`` reads ``$JFB_CELEBA``.
    """
    if root is None:
        root = os.environ.get(CELEBA_ENV)
        if not root:
            raise FileNotFoundError(
                f"no CelebA folder given: pass a path (e.g. --data /path/to/celeba) or set "
                f"{CELEBA_ENV}; the folder must contain img_align_celeba/000001.jpg, ...")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CelebA folder {root} does not exist (expected a folder "
                                f"containing img_align_celeba/000001.jpg, ...)")
    candidates = [root / "img_align_celeba" / "img_align_celeba", root / "img_align_celeba", root]
    for c in candidates:
        if c.is_dir() and any(_CELEBA_NAME.match(p.name) for p in c.iterdir()):
            return c
    raise FileNotFoundError(
        f"no CelebA images found under {root}: expected {root}/img_align_celeba/NNNNNN.jpg "
        f"(or the doubled img_align_celeba/img_align_celeba/ layout)")


class CelebAFolder(torch.utils.data.Dataset):
    """CelebA aligned faces from a folder, as ``(3, size, size)`` float32 tensors in [0, 1].

    Parameters
    ----------
    root:
        The folder holding ``img_align_celeba/`` (see :func:`find_celeba_images`);
        ``None`` reads ``$JFB_CELEBA``.
    split:
        ``"train"``, ``"val"`` (official subset only) or ``"test"``.
    size:
        Output side. The whole 178x218 image is resized to ``size x size``
        (bilinear with anti-aliasing, no crop), as the paper did; faces are
        therefore slightly squeezed vertically.
    subset:
        ``"paper"``: the first 10,000 images, 1-8,000 train and 8,001-10,000 test.
        ``"official"``: CelebA's own partition by image number.
    limit:
        Keep only the first ``limit`` images of the split (sorted by number).

    Images missing from the folder are simply not part of the split; a split
    with no image at all is an error.
    """

    def __init__(self, root: str | os.PathLike[str] | None, split: str = "train", size: int = 128,
                 subset: str = "paper", limit: int | None = None) -> None:
        ranges = {"paper": CELEBA_PAPER, "official": CELEBA_OFFICIAL}
        if subset not in ranges:
            raise UserError(f"subset must be 'paper' or 'official', got {subset!r}")
        if split not in ranges[subset]:
            raise UserError(f"split {split!r} does not exist in the {subset} subset; "
                             f"choose one of {sorted(ranges[subset])}")
        if size < 8:
            raise UserError(f"size must be >= 8, got {size}")
        self.directory = find_celeba_images(root)
        lo, hi = ranges[subset][split]
        by_number: dict[int, list[Path]] = {}
        for p in self.directory.iterdir():
            m = _CELEBA_NAME.match(p.name)
            if m and lo <= int(m.group(1)) <= hi:
                by_number.setdefault(int(m.group(1)), []).append(p)
        # one file per image number: the .jpg of the download where both exist, never both
        files, self.duplicates = [], []
        for n in sorted(by_number):
            found = sorted(by_number[n], key=lambda q: (q.suffix.lower() != ".jpg", q.name))
            files.append(found[0])
            self.duplicates += [q.name for q in found[1:]]
        if limit is not None:
            if int(limit) < 1:
                raise UserError(f"limit must be >= 1 (the number of images to keep), got {limit}")
            files = files[: int(limit)]
        if not files:
            raise FileNotFoundError(f"no image of the {subset} {split} split (numbers {lo:06d}-{hi:06d}) "
                                    f"in {self.directory}")
        self.files: list[Path] = files
        self.size = int(size)
        self.split, self.subset = split, subset

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_image(self.files[index], self.size)

    def __repr__(self) -> str:
        return (f"CelebAFolder({str(self.directory)!r}, split={self.split!r}, subset={self.subset!r}, "
                f"size={self.size}, n={len(self)})")


def load_image(path: str | os.PathLike[str], size: int) -> torch.Tensor:
    """Decode an image file, resize the whole image to ``size x size``: ``(3, size, size)`` in [0, 1].

    A file that cannot be decoded, one larger than PIL's decompression-bomb limit, or one
    too large to decode in the memory at hand raises :class:`BadImage` naming it.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
                arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"cannot decode image {path}: {exc}") from exc
    except MemoryError:  # under PIL's pixel limit but too large for the memory at hand
        raise BadImage(f"cannot decode image {path}: it does not fit in memory") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class BadImage(UserError):
    """An image file that cannot be decoded (corrupt, truncated, not an image, too large)."""


def readable_batches(dataset: "CelebAFolder", batch_size: int,
                     skipped: list[str]) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(image numbers, batch)`` over a CelebA folder in order, skipping files that cannot be
    decoded (each appended to ``skipped`` as ``"name: reason"``), as :func:`prepare_celeba` does."""
    ids: list[int] = []
    rows: list[torch.Tensor] = []
    for path in dataset.files:
        try:
            rows.append(load_image(path, dataset.size))
        except BadImage as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        ids.append(int(path.stem))
        if len(rows) == batch_size:
            yield ids, torch.stack(rows)
            ids, rows = [], []
    if rows:
        yield ids, torch.stack(rows)


def iterate_batches(dataset: Sequence[torch.Tensor], batch_size: int) -> Iterator[tuple[range, torch.Tensor]]:
    """``(indices, batch)`` pairs over a dataset, in order (for evaluation)."""
    for start in range(0, len(dataset), batch_size):
        idx = range(start, min(start + batch_size, len(dataset)))
        yield idx, torch.stack([dataset[i] for i in idx])


# ---------------------------------------------------------------------- measurements

def measure(A: LinearOperator, x: torch.Tensor, noise_std: float, seed: int = 0,
            indices: Sequence[int] | None = None) -> torch.Tensor:
    """Measurements ``d = A x + eps`` with Gaussian ``eps`` of standard deviation ``noise_std``.

    Deterministic: with ``indices`` (the dataset index of each image), image ``i``
    always gets the same noise, ``seed`` and ``indices[i]`` alone decide it, whatever
    the batch it is in. Without ``indices`` the whole batch's noise comes from one
    generator seeded with ``seed``.
    """
    y = A(x)
    if indices is None:
        return add_noise(y, noise_std, seed=seed)
    if len(indices) != x.shape[0]:
        raise UserError(f"{len(indices)} indices for a batch of {x.shape[0]}")
    out = torch.empty_like(y)
    for row, idx in enumerate(indices):
        out[row: row + 1] = add_noise(y[row: row + 1], noise_std, seed=seed * 1_000_003 + int(idx))
    return out


def random_crops(x: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """One random ``size x size`` crop of each image of ``x`` ``(B, C, H, W)``, at positions drawn
    by a generator seeded with ``seed`` (the same seed gives the same crops)."""
    h, w = x.shape[-2:]
    if not 0 < size <= min(h, w):
        raise UserError(f"crop size {size} does not fit {h}x{w} images")
    g = torch.Generator().manual_seed(seed)
    top = torch.randint(0, h - size + 1, (len(x),), generator=g).tolist()
    left = torch.randint(0, w - size + 1, (len(x),), generator=g).tolist()
    return torch.stack([img[:, t:t + size, s:s + size] for img, t, s in zip(x, top, left)])


# ---------------------------------------------------------------------- compact cache

def _check_cache_out(out: Path, overwrite: bool) -> Path:
    """``out`` if a cache may be written there (before any image is decoded), else a :class:`UserError`."""
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out / 'celeba.pt'}")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; remove it, choose another --out, or pass --force to replace it")
    existing = next((q for q in out.parents if q.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {out}: {existing} is not a writable folder")
    return out


def prepare_celeba(root: str | os.PathLike[str] | None, out: str | os.PathLike[str], size: int = 128,
                   subset: str = "paper", splits: Sequence[str] = ("train", "test"),
                   limit: int | None = None, progress=None, overwrite: bool = False,
                   encode: str | None = None, quality: int = 90) -> dict:
    """Decode and resize CelebA once into one file: ``uint8`` images ``(N, 3, size, size)``.

    The file (``torch.save``) holds ``images``, ``ids`` (CelebA image numbers),
    ``splits`` (split name -> indices into ``images``), ``size``, ``subset``,
    ``skipped`` (files that could not be decoded: skipped and counted, never
    silently) and ``source``. Written atomically. ``limit`` keeps the first
    images of each split. ``progress(done, total)`` is called as images are read.
    Returns a summary (counts per split, skipped files, bytes). An existing ``out``
    is refused unless ``overwrite``; an ``out`` that cannot be written is refused
    before any image is decoded. The cache also stores ``hash``, a digest of its
    content (:func:`cache_hash`), by which a resumed run recognises its data.

    ``encode="webp"`` (or ``"jpeg"``) stores each image compressed at ``quality``
    instead of as raw bytes: a compact cache to carry to another machine (10,000
    images at 128 px: about 37 MB in WebP at quality 90, against 470 MB raw; the coding
    itself costs about 40 dB PSNR). The images a run sees are the decoded ones, and
    the hash is theirs; :func:`load_cache` decodes them.
    """
    if encode not in (None, *ENCODINGS):
        raise UserError(f"encode must be one of {ENCODINGS} (or None for raw), got {encode!r}")
    if not 1 <= int(quality) <= 100:
        raise UserError(f"quality must be in 1..100, got {quality}")
    out = _check_cache_out(Path(out), overwrite)
    datasets = {s: CelebAFolder(root, s, size=size, subset=subset, limit=limit) for s in splits}
    total = sum(len(ds) for ds in datasets.values())
    images, ids, index, skipped, done = [], [], {}, [], 0
    for name, ds in datasets.items():
        rows = []
        for path in ds.files:
            done += 1
            try:
                img = load_image(path, size)
            except BadImage as exc:
                skipped.append(f"{path.name}: {exc}")
                continue
            rows.append(len(images))
            images.append((img * 255).round().clamp(0, 255).to(torch.uint8))
            ids.append(int(path.stem))
            if progress:
                progress(done, total)
        if not rows:
            raise UserError(f"no readable image in the {subset} {name} split of {ds.directory}")
        index[name] = torch.tensor(rows, dtype=torch.long)
        skipped += [f"{q}: another file with the same image number was used" for q in ds.duplicates]
    cache = {"images": torch.stack(images), "ids": torch.tensor(ids, dtype=torch.long), "splits": index,
             "size": int(size), "subset": subset, "skipped": skipped, "source": str(find_celeba_images(root))}
    if encode is not None:
        cache["encoded"] = [_encode(img, encode, int(quality)) for img in cache["images"]]
        cache["format"], cache["quality"] = encode, int(quality)
        cache["images"] = _decode_all(cache["encoded"], int(size))  # what a run will see
    cache["hash"] = cache_hash(cache)
    if encode is not None:
        del cache["images"]
    path = save_atomic(cache, out)
    return {"path": str(path), "counts": {k: len(v) for k, v in index.items()}, "skipped": skipped,
            "bytes": path.stat().st_size, "hash": cache["hash"]}


ENCODINGS = ("webp", "jpeg")


def _encode(img: torch.Tensor, fmt: str, quality: int) -> torch.Tensor:
    """One ``(3, S, S)`` uint8 image as the bytes of a WebP or JPEG file (a uint8 tensor)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, fmt.upper(), quality=quality)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def _decode_all(encoded: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """The ``(N, 3, size, size)`` uint8 images of a compact cache."""
    import io

    from PIL import Image

    out = torch.empty(len(encoded), 3, size, size, dtype=torch.uint8)
    for i, data in enumerate(encoded):
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            arr = np.asarray(im.convert("RGB"))
        if arr.shape != (size, size, 3):
            raise BadDataCache(f"image {i} of the compact cache decodes to {arr.shape}, not ({size}, {size}, 3)")
        out[i] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    return out


def cache_hash(cache: dict) -> str:
    """SHA-256 of a cache's content (images, image numbers, splits, size): the same data at
    another path has the same hash; other data has another."""
    h = hashlib.sha256()
    h.update(f"size={int(cache['size'])};".encode())
    h.update(cache["images"].contiguous().numpy().tobytes())
    h.update(cache["ids"].to(torch.long).contiguous().numpy().tobytes())
    for name in sorted(cache["splits"]):
        h.update(name.encode())
        h.update(torch.as_tensor(cache["splits"][name], dtype=torch.long).contiguous().numpy().tobytes())
    return h.hexdigest()


def load_cache(path: str | os.PathLike[str]) -> dict:
    """A cache written by :func:`prepare_celeba`, checked; ``hash`` is computed for an older
    cache that lacks it. A missing, truncated or foreign file raises :class:`BadDataCache`."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data cache at {path}; make one with `python -m jfb_core prepare --data ...`")
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BadDataCache(f"{path} was refused: it holds objects other than tensors and plain data "
                           f"({str(exc).splitlines()[-1][:120]}); make it again with `python -m jfb_core prepare`") \
            from None
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle a user's file means it is not a cache
        raise BadDataCache(f"{path} is not a readable data cache ({str(exc).splitlines()[0][:120]}); "
                           f"make it again with `python -m jfb_core prepare`") from None
    if not isinstance(cache, dict):
        raise BadDataCache(f"{path} is not a jfb_core data cache (it holds a {type(cache).__name__}); "
                           f"make one with `python -m jfb_core prepare`")
    if "encoded" in cache and "images" not in cache:  # a compact cache: decode it once here
        try:
            cache["images"] = _decode_all(cache["encoded"], int(cache["size"]))
        except (OSError, ValueError, KeyError) as exc:
            raise BadDataCache(f"{path} is damaged: an image does not decode ({exc}); make it again") from None
    for key in ("images", "ids", "splits", "size"):
        if key not in cache:
            raise BadDataCache(f"{path} is not a jfb_core data cache (no {key!r}); "
                               f"make one with `python -m jfb_core prepare`")
    images = cache["images"]
    if (not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4
            or tuple(images.shape[1:]) != (3, cache["size"], cache["size"]) or len(cache["ids"]) != len(images)):
        raise BadDataCache(f"{path} is damaged: its images are not (N, 3, {cache['size']}, {cache['size']}) uint8 "
                           f"with one id each; make it again with `python -m jfb_core prepare`")
    for name, idx in cache["splits"].items():
        idx = torch.as_tensor(idx)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(images)):
            raise BadDataCache(f"{path} is damaged: split {name!r} points past its {len(images)} images")
    cache.setdefault("hash", cache_hash(cache))
    return cache


def cache_split(cache: dict, split: str, n: int | None = None, source: str = "the cache") -> tuple[torch.Tensor, list[int]]:
    """``(images, ids)`` of ``split`` of a loaded cache: float32 in [0, 1], ``(N, 3, S, S)``, the
    first ``n`` (default all), with the ids that seed each image's noise.

    A cache has no ``"val"`` split of its own: ``"val"`` is then the *last* ``n`` images of
    the training split (held out by training on the ones before them), and needs ``n``.
    Training (:func:`jfb_core.train.split_images`) and ``paper-run`` both take their images here."""
    if n is not None and n < 1:
        raise UserError(f"asked for {n} images of the {split} split; give at least 1")
    if split == "val" and "val" not in cache["splits"]:
        if n is None:
            raise UserError(f"the val split of {source} is the training split's tail: give its size")
        idx = cache["splits"]["train"][-n:]
    elif split not in cache["splits"]:
        raise UserError(f"split {split!r} is not in {source} (has {sorted(cache['splits'])})")
    else:
        idx = cache["splits"][split][:n]
    if len(idx) == 0:
        raise UserError(f"split {split!r} of {source} is empty")
    return cache["images"][idx].float() / 255.0, [int(cache["ids"][i]) for i in idx]


__all__ = ["BadImage", "ENCODINGS", "cache_hash", "cache_split", "load_cache", "readable_batches", "BUNDLED_PHOTOS", "CELEBA_ENV", "CELEBA_OFFICIAL", "CELEBA_PAPER", "CelebAFolder",
           "Photo", "SPLITS", "bundled_images", "bundled_photo", "find_celeba_images",
           "iterate_batches", "load_image", "measure", "photo_names", "prepare_celeba", "random_crops"]
