"""Convert a folder of images into sharded ImageNet-format TFRecords (see effnet/data/imagenet_example.py).

Input layouts (images: .jpg .jpeg .png .bmp .gif .webp in any letter case; hidden entries ignored):
  class tree    SRC/<class>/**/<image>; --val_fraction of each class becomes the validation split.
  split trees   SRC/train/<class>/... and SRC/validation/<class>/... (or SRC/val/...). With no
                validation folder, --val_fraction of train is carved out as above.
  ILSVRC        SRC/train/<synset>/*.JPEG and the flat SRC/val/*.JPEG, labelled by
                SRC/validation_labels.txt: one class per line, in sorted-filename order (the tfds and
                Inception convention). Without that file, a flat val/ holding exactly the 50,000
                official images is labelled from the copy shipped in tensorflow-datasets.

Labels: when every class name is an ImageNet synset, a class's label is its 1-based index in the
standard synset list and OUT/labels.txt is that whole list; otherwise classes are sorted by name and
labelled 1..K. Either way line k of OUT/labels.txt names label k.

Output is deterministic: files are sorted, shuffled with a fixed seed and dealt round-robin to the
shards, so the same input gives byte-identical shards whatever --workers is. Each shard is written
under a hidden temporary name and renamed when complete, and labels.txt is written last: a crash never
leaves a partial file under a final name. Images that cannot be decoded are reported and skipped.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from effnet.core.errors import ConfigError

# TensorFlow (and effnet.data.imagenet_example, which loads it) takes seconds to import, so the functions
# that need it import it themselves ("deferred" below), after the cheap checks on SRC and OUT: a mistyped
# path is reported at once.

PROG = "make_tfrecords"
SPLITS = ("train", "validation")
VALIDATION_DIRS = ("validation", "val")
VALIDATION_LABELS_FILE = "validation_labels.txt"
OFFICIAL_VALIDATION_SIZE = 50_000
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
SHUFFLE_SEED = 0
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)
JPEG_QUALITY = 95  # for images that must be re-encoded; high, since training decodes them again

T = TypeVar("T")


class SkipImage(Exception):
    """An input image that cannot be decoded: reported and left out, never fatal."""


@dataclass(frozen=True)
class Source:
    """One image file and the class it belongs to (its folder name, or its validation label)."""

    path: Path
    class_name: str


@dataclass(frozen=True)
class ClassLabels:
    """Line k of `names` is the class with label k; `label` and `text` map a class name to its label and
    human-readable name."""

    names: list[str]
    label: dict[str, int]
    text: dict[str, str]


@dataclass(frozen=True)
class LabelledImage:
    """An image file ready to be encoded: FILENAME is its path relative to SRC."""

    path: Path
    filename: str
    label: int
    synset: str
    text: str


@dataclass(frozen=True)
class SplitResult:
    split: str
    examples: int
    shards: int
    skipped: int


# ---- finding the images -------------------------------------------------------------------------


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _is_image(path: Path) -> bool:
    return _visible(path) and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _class_tree(root: Path) -> list[Source]:
    """Images anywhere under each visible sub-folder of ROOT, labelled by that sub-folder's name."""
    sources = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p)):
        sources.extend(Source(p, class_dir.name) for p in sorted(class_dir.rglob("*")) if _is_image(p))
    return sources


def _validation_labels(src: Path, count: int) -> list[str]:
    """The class of each of COUNT flat validation images, in sorted-filename order."""
    path = src / VALIDATION_LABELS_FILE
    if path.is_file():
        labels = path.read_text().split()
    elif count == OFFICIAL_VALIDATION_SIZE:
        from effnet.data.imagenet_example import imagenet_validation_synsets  # deferred: loads TensorFlow
        labels = imagenet_validation_synsets()
    else:
        raise ConfigError(f"{count} images lie directly in the validation folder but {path} is missing "
                          "(one class per line, in sorted-filename order)")
    if len(labels) != count:
        raise ConfigError(f"{path} has {len(labels)} labels for {count} flat validation images")
    return labels


def _flat_validation(val_dir: Path, src: Path) -> list[Source]:
    """ILSVRC-style validation: images directly in VAL_DIR, labelled from a list."""
    images = sorted(p for p in val_dir.iterdir() if _is_image(p))
    if not images:
        return []
    return [Source(path, name) for path, name in zip(images, _validation_labels(src, len(images)))]


def _carve_validation(train: list[Source], fraction: float) -> tuple[list[Source], list[Source]]:
    """Move a seeded FRACTION of each class from TRAIN to validation, so every class is in both."""
    by_class: dict[str, list[Source]] = {}
    for source in train:
        by_class.setdefault(source.class_name, []).append(source)
    kept, carved = [], []
    for name in sorted(by_class):
        files = by_class[name]
        picked = set(random.Random(f"{SHUFFLE_SEED}/{name}").sample(range(len(files)), round(len(files) * fraction)))
        for index, source in enumerate(files):
            (carved if index in picked else kept).append(source)
    return kept, carved


def find_sources(src: Path, val_fraction: float) -> dict[str, list[Source]]:
    """The images of each split in SRC, in sorted order (see the module docstring for the layouts)."""
    train_dir = src / "train"
    val_dirs = [src / name for name in VALIDATION_DIRS if (src / name).is_dir()]
    if len(val_dirs) > 1:
        raise ConfigError(f"{src} has both validation/ and val/: keep one")
    if not train_dir.is_dir() and not val_dirs:
        train, validation = _class_tree(src), []
    else:
        train = _class_tree(train_dir) if train_dir.is_dir() else []
        validation = _class_tree(val_dirs[0]) + _flat_validation(val_dirs[0], src) if val_dirs else []
    if not validation:
        train, validation = _carve_validation(train, val_fraction)
    if not train and not validation:
        raise ConfigError(f"no images found in {src} (expected SRC/<class>/*.jpg or SRC/train/<class>/*.jpg; "
                          f"suffixes: {' '.join(sorted(IMAGE_SUFFIXES))})")
    return {"train": train, "validation": validation}


# ---- labels -------------------------------------------------------------------------------------


def label_classes(class_names: Iterable[str]) -> ClassLabels:
    """ImageNet labels when every name is a synset, else the sorted names labelled 1..K."""
    from effnet.data.imagenet_example import (  # deferred: loads TensorFlow
        LABEL_OFFSET, imagenet_class_names, imagenet_synsets)
    wanted = set(class_names)
    synsets = imagenet_synsets()
    names, texts = (synsets, imagenet_class_names()) if wanted <= set(synsets) else (sorted(wanted), sorted(wanted))
    return ClassLabels(names, {name: index + LABEL_OFFSET for index, name in enumerate(names)}, dict(zip(names, texts)))


def _labelled(source: Source, src: Path, labels: ClassLabels) -> LabelledImage:
    name = source.class_name
    return LabelledImage(source.path, source.path.relative_to(src).as_posix(), labels.label[name], name,
                         labels.text[name])


# ---- encoding -----------------------------------------------------------------------------------


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """IMAGE as RGB JPEG bytes (PIL's encoder is deterministic for a given build)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_bytes(path: Path) -> tuple[bytes, int, int]:
    """(JPEG bytes, height, width) of the image at PATH; raises SkipImage if it does not decode.

    RGB and greyscale JPEGs are kept byte-for-byte after a full decode; anything else (PNG, CMYK
    JPEG, ...) is converted to an RGB JPEG, since readers decode with `decode_jpeg(channels=3)`.
    """
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                data = encode_jpeg(image, JPEG_QUALITY)
            return data, image.height, image.width
    except UnidentifiedImageError as err:
        raise SkipImage(f"{PROG}: skipped {path}: not an image format PIL recognises") from err
    except Exception as err:  # corrupt files make PIL raise many types; one bad image must not stop a run
        raise SkipImage(f"{PROG}: skipped {path}: {err}") from err


def _file_record(image: LabelledImage) -> bytes:
    from effnet.data.imagenet_example import encode_example  # deferred: loads TensorFlow
    data, height, width = jpeg_bytes(image.path)
    return encode_example(data, image.label, image.synset, image.text, height, width, image.filename)


# ---- writing ------------------------------------------------------------------------------------


def _atomic_path(path: Path) -> Path:
    """The hidden temporary name a file is written under before being renamed to PATH."""
    return path.with_name(f".{path.name}.tmp")


def deal(items: Sequence[T], count: int) -> list[list[T]]:
    """ITEMS shuffled with a fixed seed and dealt round-robin into COUNT shards."""
    order = list(items)
    random.Random(SHUFFLE_SEED).shuffle(order)
    return [order[index::count] for index in range(count)]


def shard_names(split: str, count: int) -> list[str]:
    from effnet.data.imagenet_example import shard_name  # deferred: loads TensorFlow
    return [shard_name(split, index, count) for index in range(count)]


def _write_shard(path: Path, items: Sequence[T], to_record: Callable[[T], bytes]) -> list[str]:
    """Write ITEMS' records to PATH via a temporary name; returns one message per skipped item."""
    import tensorflow as tf  # deferred: loads TensorFlow
    temp = _atomic_path(path)
    skipped = []
    try:
        with tf.io.TFRecordWriter(str(temp)) as writer:
            for item in items:
                try:
                    writer.write(to_record(item))
                except SkipImage as err:
                    skipped.append(str(err))
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return skipped


def write_split(out: Path, split: str, items: Sequence[T], num_shards: int, to_record: Callable[[T], bytes],
                workers: int) -> SplitResult:
    """Write ITEMS as NUM_SHARDS shards of SPLIT in OUT, one shard per task on WORKERS threads.

    TO_RECORD turns an item into a serialised Example or raises SkipImage. Each shard's bytes depend
    only on ITEMS (see `deal`), never on WORKERS or timing. Skips are reported on stderr as they happen.
    """
    shards = deal(items, num_shards)
    skipped = 0
    with tqdm(total=len(items), desc=split, unit="img", disable=None, file=sys.stderr) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_write_shard, out / name, shard, to_record): len(shard)
                   for name, shard in zip(shard_names(split, num_shards), shards)}
        for future in as_completed(futures):
            messages = future.result()
            for message in messages:
                tqdm.write(message, file=sys.stderr)
            skipped += len(messages)
            bar.update(futures[future])
    return SplitResult(split, len(items) - skipped, num_shards, skipped)


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"OUT {out} exists and is not a directory")


def prepare_out_dir(out: Path, shard_counts: dict[str, int]) -> None:
    """Create OUT, refusing one that holds shards of another layout (readers would mix the two)."""
    check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create OUT {out}: {err.strerror}") from err
    planned = {name for split, count in shard_counts.items() for name in shard_names(split, count)}
    foreign = sorted(p.name for split in SPLITS for p in out.glob(f"{split}-*-of-*") if p.name not in planned)
    if foreign:
        raise ConfigError(f"{out} already holds other shards ({foreign[0]} and {len(foreign) - 1} more): "
                          "use an empty folder")


def write_labels(out: Path, names: Sequence[str]) -> None:
    """OUT/labels.txt, line k naming label k; written atomically, after the shards."""
    path = out / "labels.txt"
    temp = _atomic_path(path)
    temp.write_text("".join(f"{name}\n" for name in names))
    os.replace(temp, path)


# ---- the command --------------------------------------------------------------------------------


def convert(src: Path, out: Path, shards: dict[str, int], workers: int, val_fraction: float) -> list[SplitResult]:
    """Convert the images under SRC into ImageNet TFRecords in OUT; SHARDS is the most shards per split."""
    if not src.is_dir():
        raise ConfigError(f"SRC {src} is not a directory")
    check_out_dir(out)
    sources = find_sources(src, val_fraction)
    labels = label_classes(source.class_name for split in sources.values() for source in split)
    counts = {split: min(shards[split], len(items)) for split, items in sources.items() if items}
    prepare_out_dir(out, counts)
    results = [write_split(out, split, [_labelled(source, src, labels) for source in sources[split]], count,
                           _file_record, workers)
               for split, count in counts.items()]
    write_labels(out, labels.names)
    return results


def summary(results: Sequence[SplitResult], out: Path) -> str:
    splits = ", ".join(f"{r.split} {r.examples} examples in {r.shards} shards" for r in results)
    return f"{PROG}: {splits}; skipped {sum(r.skipped for r in results)} unreadable images -> {out}"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, metavar="SRC", help="folder of images (layouts: see above)")
    parser.add_argument("out", type=Path, metavar="OUT", help="folder for the shards and labels.txt")
    parser.add_argument("--train_shards", type=positive_int, default=1024,
                        help="train shards (fewer if there are fewer images); default 1024")
    parser.add_argument("--validation_shards", type=positive_int, default=128,
                        help="validation shards (fewer if there are fewer images); default 128")
    parser.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS,
                        help="shards written in parallel; does not change the output")
    parser.add_argument("--val_fraction", type=_fraction, default=0.1,
                        help="share of each class held out for validation when SRC has no validation folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = convert(args.src, args.out, {"train": args.train_shards, "validation": args.validation_shards},
                          args.workers, args.val_fraction)
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(summary(results, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
