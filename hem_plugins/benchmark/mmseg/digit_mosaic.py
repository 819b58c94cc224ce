"""DigitMosaic: a small, strongly imbalanced segmentation dataset made from scikit-learn's digits.

Each 64x64 RGB canvas holds 1-4 upscaled 8x8 digits from
``sklearn.datasets.load_digits`` on a noisy background; the label of a pixel
is its digit's class (``1 + digit``) where the digit's ink is, and background
(0) elsewhere. Background holds most pixels and the digit classes follow a
long-tailed distribution (digit 0 about 8 times as frequent as digit 9), so
the data is imbalanced at both levels. Train and val use disjoint source
digits. Everything is deterministic: the files are generated once into
``$HEM_DATA_CACHE`` (default ``~/.cache/hem_plugins``)
``/digit_mosaic/<hash>/{img_dir,ann_dir}/{train,val}/*.png`` (mmseg's standard
layout) and read by mmseg's normal ``LoadImageFromFile``/``LoadAnnotations``.

The 100 ``val`` images are the loss benchmark's test set. Hyper-parameters are chosen
on a validation split carved from the 400 *training* images instead (the dataset's
``carve`` option, :func:`carve_indices`): ``carve=dict(part='train', fraction=0.2,
seed=s)`` reads the 320 images left for training, ``part='val'`` the other 80.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

__all__ = [
    "ANOMALY_LABEL",
    "DigitMosaicAnomalyDataset",
    "DigitMosaicDataset",
    "carve_indices",
    "digit_mosaic_anomaly_root",
    "digit_mosaic_root",
    "generate_digit_mosaic",
    "generate_digit_mosaic_anomaly",
]

#: Generation parameters; any change gives a new cache folder.
SPEC = dict(
    version=1,
    size=64,
    num_train=400,
    num_val=100,
    val_fraction=0.3,  # of the source digits, held out for val
    digits_per_image=(1, 4),
    digit_sizes=(16, 20, 24, 28),
    tail_ratio=8.0,  # frequency of digit 0 / frequency of digit 9
    ink_threshold=0.3,
    noise=0.12,
    seed=0,
)

CLASSES = ("background", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
PALETTE = [
    [0, 0, 0],
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
]


def _spec_hash(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _cache_base() -> Path:
    return Path(os.environ.get("HEM_DATA_CACHE", Path.home() / ".cache" / "hem_plugins"))


def _split_sources(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> dict[str, dict[int, np.ndarray]]:
    """Per class, a disjoint train/val split of the source digits."""
    pools: dict[str, dict[int, np.ndarray]] = {"train": {}, "val": {}}
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(labels == d))
        n_val = int(round(len(idx) * SPEC["val_fraction"]))
        pools["val"][d] = images[idx[:n_val]]
        pools["train"][d] = images[idx[n_val:]]
    return pools


def _render(
    pool: dict[int, np.ndarray],
    rng: np.random.Generator,
    class_p: np.ndarray,
    label_of: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One mosaic and its label map; digit ``d``'s ink is labelled ``label_of[d]``
    (default ``d + 1``). ``label_of`` draws nothing from ``rng``."""
    from PIL import Image

    size = SPEC["size"]
    # Noisy, smoothly shaded background of a random dark colour.
    base = rng.uniform(0.0, 0.35, size=3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    shade = 0.15 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy)
    img = base[None, None, :] + shade[..., None]
    img = img + rng.normal(0.0, SPEC["noise"], size=(size, size, 3))
    label = np.zeros((size, size), dtype=np.uint8)
    lo, hi = SPEC["digits_per_image"]
    for _ in range(int(rng.integers(lo, hi + 1))):
        d = int(rng.choice(10, p=class_p))
        src = pool[d][int(rng.integers(len(pool[d])))].reshape(8, 8) / 16.0
        s = int(rng.choice(SPEC["digit_sizes"]))
        ink = np.asarray(
            Image.fromarray((src * 255).astype(np.uint8)).resize((s, s), Image.BILINEAR),
            dtype=np.float64,
        )
        ink /= 255.0
        y, x = (int(v) for v in rng.integers(0, size - s + 1, size=2))
        color = rng.uniform(0.55, 1.0, size=3)
        region = img[y : y + s, x : x + s]
        alpha = ink[..., None]
        region[:] = (1 - alpha) * region + alpha * color[None, None, :]
        value = d + 1 if label_of is None else int(label_of[d])
        label[y : y + s, x : x + s][ink > SPEC["ink_threshold"]] = value
    img = np.clip(img, 0.0, 1.0)
    return (img * 255).round().astype(np.uint8), label


def generate_digit_mosaic(root: str | Path) -> None:
    """Write the dataset into ``root`` (``img_dir``/``ann_dir``, ``train``/``val``)."""
    from PIL import Image

    from ..digits import digit_images

    rng = np.random.default_rng(SPEC["seed"])
    pools = _split_sources(*digit_images(), rng)
    decay = SPEC["tail_ratio"] ** (-np.arange(10) / 9.0)
    class_p = decay / decay.sum()
    root = Path(root)
    for split in ("train", "val"):
        (root / "img_dir" / split).mkdir(parents=True, exist_ok=True)
        (root / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
        split_rng = np.random.default_rng([SPEC["seed"], 1 if split == "train" else 2])
        for i in range(SPEC[f"num_{split}"]):
            img, label = _render(pools[split], split_rng, class_p)
            name = f"{split}_{i:05d}.png"
            Image.fromarray(img).save(root / "img_dir" / split / name)
            Image.fromarray(label).save(root / "ann_dir" / split / name)
    (root / "spec.json").write_text(json.dumps(SPEC, indent=1))


def digit_mosaic_root() -> Path:
    """The cache folder of the current spec, generated on first use (safe under DDP).

    Each process generates into a temporary folder and renames it into place;
    a process that loses the race drops its copy.
    """
    return _cached(_cache_base() / "digit_mosaic" / _spec_hash(SPEC), generate_digit_mosaic)


def _cached(root: Path, generate) -> Path:
    """``root``, written by ``generate(folder)`` (which ends with ``spec.json``) if absent."""
    if (root / "spec.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root.parent))
    try:
        generate(tmp)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "spec.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


CARVE_PARTS = ("train", "val")


def carve_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a seeded split of ``n`` images, each sorted.

    ``val`` holds ``round(fraction * n)`` images drawn at random (``numpy``'s
    ``default_rng(seed)``), ``train`` the rest; the two are disjoint and cover
    ``range(n)``. Images, not pixels, are split (an image holds several classes).
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(
            f"DigitMosaicDataset: carve['fraction'] must be in (0, 1), got {fraction!r}"
        )
    k = int(round(float(fraction) * n))
    if not 0 < k < n:
        raise ValueError(
            f"DigitMosaicDataset: carve['fraction']={fraction} of {n} images leaves an empty part"
        )
    order = np.random.default_rng(int(seed)).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def _check_carve(carve: dict, split: str) -> dict:
    """``carve`` with its defaults, or a ValueError naming the bad key."""
    if not isinstance(carve, dict):
        raise TypeError(f"DigitMosaicDataset: carve must be a dict or None, got {carve!r}")
    if split != "train":
        raise ValueError(
            "DigitMosaicDataset: carve splits the training images only (split='train'); "
            f"got split={split!r}, whose images are the benchmark's test set"
        )
    unknown = sorted(set(carve) - {"part", "fraction", "seed"})
    if unknown:
        raise ValueError(
            f"DigitMosaicDataset: unknown carve key(s) {unknown}; use part, fraction, seed"
        )
    out = {"fraction": 0.2, "seed": 0, **carve}
    if out.get("part") not in CARVE_PARTS:
        raise ValueError(
            f"DigitMosaicDataset: carve['part'] must be 'train' or 'val', got {out.get('part')!r}"
        )
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int):
        raise ValueError(f"DigitMosaicDataset: carve['seed'] must be an int, got {out['seed']!r}")
    return out


@DATASETS.register_module()
class DigitMosaicDataset(BaseSegDataset):
    """mmseg dataset of DigitMosaic (see the module docstring); 11 classes, background 0.

    Args:
        split: ``'train'`` (400 images) or ``'val'`` (100 images).
        data_root: where the data is; by default the generated cache folder.
        carve: ``dict(part, fraction=0.2, seed=0)`` to read one part of a seeded split
            of the training images (:func:`carve_indices`): ``part='train'`` the
            ``1 - fraction`` left for training, ``part='val'`` the ``fraction`` held out
            for validation. Only with ``split='train'``. None (default): every image.
        **kwargs: passed to ``BaseSegDataset`` (``pipeline``, ``test_mode``, ...).

    Config::

        train_dataloader = dict(dataset=dict(type='DigitMosaicDataset', split='train',
                                             pipeline=train_pipeline))
        # choose hyper-parameters on 80 of the training images, train on the other 320:
        _carve = dict(fraction=0.2, seed=0)
        train_dataloader = dict(dataset=dict(carve=dict(_carve, part='train')))
        val_dataloader = dict(dataset=dict(split='train', carve=dict(_carve, part='val')))

    ``HEMMarginHook`` counts the images the training loader reads, so with a carve
    HEM's and HEM+'s margins come from the training part alone.
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(
        self,
        split: str = "train",
        data_root: str | None = None,
        carve: dict | None = None,
        **kwargs,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"DigitMosaicDataset: split must be 'train' or 'val', got {split!r}")
        self.carve = None if carve is None else _check_carve(carve, split)
        if data_root is None:
            data_root = str(digit_mosaic_root())
        kwargs.setdefault(
            "data_prefix", dict(img_path=f"img_dir/{split}", seg_map_path=f"ann_dir/{split}")
        )
        self.split = split
        super().__init__(
            img_suffix=".png",
            seg_map_suffix=".png",
            reduce_zero_label=False,
            data_root=data_root,
            **kwargs,
        )

    def load_data_list(self) -> list[dict]:
        """mmseg's list of the split's images (sorted by path), cut to the carve's part."""
        data_list = super().load_data_list()
        if self.carve is None:
            return data_list
        c = self.carve
        parts = carve_indices(len(data_list), c["fraction"], c["seed"])
        return [data_list[i] for i in parts[CARVE_PARTS.index(c["part"])]]


# ---- the anomaly variant: digits never seen in training ----------------------------------
#: The label of the unknown digits' pixels in the anomaly variant's ``val`` maps: outside
#: the known classes and distinct from mmseg's ignore index 255.
ANOMALY_LABEL = 254

#: Generation parameters of the anomaly variant (on top of :data:`SPEC`, whose sizes,
#: noise, source split and long tail it reuses); any change gives a new cache folder.
ANOMALY_SPEC = dict(
    version=1,
    unknown_p=0.25,  # of the val digits, drawn from the unknown digits (equally)
)


def _check_unknown_digits(unknown_digits) -> tuple[int, ...]:
    try:
        digits = tuple(sorted({int(d) for d in unknown_digits}))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"DigitMosaicAnomalyDataset: unknown_digits must be digits 0-9, got {unknown_digits!r}"
        ) from err
    if not digits or not set(digits) <= set(range(10)) or len(digits) > 8:
        raise ValueError(
            "DigitMosaicAnomalyDataset: unknown_digits must be 1 to 8 distinct digits 0-9, "
            f"got {unknown_digits!r}"
        )
    return digits


def _anomaly_spec(unknown_digits: tuple[int, ...]) -> dict:
    return dict(base=SPEC, **ANOMALY_SPEC, unknown_digits=list(unknown_digits),
                anomaly_label=ANOMALY_LABEL)  # fmt: skip


def anomaly_classes(unknown_digits) -> tuple[str, ...]:
    """The known classes: background, then the digits not in ``unknown_digits``."""
    unknown = _check_unknown_digits(unknown_digits)
    return ("background", *(str(d) for d in range(10) if d not in unknown))


def generate_digit_mosaic_anomaly(root: str | Path, unknown_digits=(8, 9)) -> None:
    """Write the anomaly variant into ``root`` (mmseg layout, as :func:`generate_digit_mosaic`).

    The source digits are split into train/val exactly as DigitMosaic's. Training
    mosaics draw only known digits (DigitMosaic's long tail over them, renormalised):
    no training image holds an unknown digit. Val mosaics draw an unknown digit with
    probability ``ANOMALY_SPEC['unknown_p']`` (the unknown digits equally) and a known
    one otherwise; the unknown digits' ink is labelled :data:`ANOMALY_LABEL`. Known
    digits are labelled ``1 + their index among the known digits`` (background 0).
    Later digits paint over earlier ones, label included.
    """
    from PIL import Image

    from ..digits import digit_images

    unknown = _check_unknown_digits(unknown_digits)
    known = [d for d in range(10) if d not in unknown]
    rng = np.random.default_rng(SPEC["seed"])
    pools = _split_sources(*digit_images(), rng)
    decay = SPEC["tail_ratio"] ** (-np.arange(10) / 9.0)
    train_p = np.where(np.isin(np.arange(10), known), decay, 0.0)
    train_p /= train_p.sum()
    val_p = (1.0 - ANOMALY_SPEC["unknown_p"]) * train_p
    val_p[list(unknown)] = ANOMALY_SPEC["unknown_p"] / len(unknown)
    label_of = np.full(10, ANOMALY_LABEL, dtype=np.int64)
    label_of[known] = np.arange(1, len(known) + 1)
    root = Path(root)
    for split, class_p in (("train", train_p), ("val", val_p)):
        (root / "img_dir" / split).mkdir(parents=True, exist_ok=True)
        (root / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
        split_rng = np.random.default_rng([SPEC["seed"], 1 if split == "train" else 2, 254])
        for i in range(SPEC[f"num_{split}"]):
            img, label = _render(pools[split], split_rng, class_p, label_of)
            name = f"{split}_{i:05d}.png"
            Image.fromarray(img).save(root / "img_dir" / split / name)
            Image.fromarray(label).save(root / "ann_dir" / split / name)
    (root / "spec.json").write_text(json.dumps(_anomaly_spec(unknown), indent=1))


def digit_mosaic_anomaly_root(unknown_digits=(8, 9)) -> Path:
    """The cache folder of the anomaly variant, generated on first use (safe under DDP)."""
    unknown = _check_unknown_digits(unknown_digits)
    root = _cache_base() / "digit_mosaic_anomaly" / _spec_hash(_anomaly_spec(unknown))
    return _cached(root, lambda tmp: generate_digit_mosaic_anomaly(tmp, unknown))


@DATASETS.register_module()
class DigitMosaicAnomalyDataset(DigitMosaicDataset):
    """DigitMosaic with digits never seen in training, labelled as anomalies in ``val``.

    See :func:`generate_digit_mosaic_anomaly`. The classes are background and the
    known digits (``len(classes) = 11 - len(unknown_digits)``: the decode head's
    ``num_classes``); training maps hold only those. ``val`` maps label the unknown
    digits' pixels :data:`ANOMALY_LABEL` (254), which ``AnomalyMetric`` (of
    :mod:`hem_plugins.mmseg`) takes as its positives; 255 stays mmseg's ignore index.
    A separate cache folder (``digit_mosaic_anomaly/<hash>``): DigitMosaic's own data
    is untouched.

    Args:
        split: ``'train'`` (400 images) or ``'val'`` (100 images).
        unknown_digits: the digits held out of training (default ``(8, 9)``, the rarest).
        data_root, carve, **kwargs: as :class:`DigitMosaicDataset`.

    Config::

        dict(type='DigitMosaicAnomalyDataset', split='val', unknown_digits=(8, 9))
    """

    # No class list on the class: mmseg would otherwise build a label map from
    # DigitMosaic's 11 classes to the known ones (and send unknown digits to 255).
    METAINFO: dict = dict()

    def __init__(
        self,
        split: str = "train",
        unknown_digits=(8, 9),
        data_root: str | None = None,
        carve: dict | None = None,
        **kwargs,
    ) -> None:
        unknown = _check_unknown_digits(unknown_digits)
        if split not in ("train", "val"):
            raise ValueError(
                f"DigitMosaicAnomalyDataset: split must be 'train' or 'val', got {split!r}"
            )
        if data_root is None:
            data_root = str(digit_mosaic_anomaly_root(unknown))
        known = [d for d in range(10) if d not in unknown]
        kwargs.setdefault(
            "metainfo",
            dict(
                classes=anomaly_classes(unknown),
                palette=[PALETTE[0]] + [PALETTE[d + 1] for d in known],
            ),
        )
        self.unknown_digits = unknown
        self.anomaly_label = ANOMALY_LABEL
        super().__init__(split=split, data_root=data_root, carve=carve, **kwargs)
