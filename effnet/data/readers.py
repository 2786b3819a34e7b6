"""Readers: ImageNet TFRecord shards, TFDS datasets and JPEG class folders, behind one contract.

Each reader returns a `RecordSet` for one split as seen by one rank: a function that makes a
`tf.data.Dataset` of `(image_bytes, label)` (label 0-based int32) in an order fixed by a seed,
and the number of examples. Sharding is by file when there are at least as many files as ranks,
else by element, so every example is read by exactly one rank per epoch.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from effnet.core.errors import DataError
from effnet.data.imagenet_example import FEATURE_SPEC, LABEL_OFFSET, imagenet_synsets

AUTOTUNE = tf.data.AUTOTUNE
SPLIT_PREFIX = {"train": "train", "eval": "validation"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


@dataclasses.dataclass(frozen=True)
class RecordSet:
    """One split, one rank: `records(seed)` -> Dataset of (image_bytes, label)."""

    records: Callable[[int | None], tf.data.Dataset]
    num_examples: int          # examples this rank reads per pass
    total_examples: int        # examples in the whole split
    num_classes: int | None = None
    truncated_files: int = 0   # TFRecord files whose last record is cut short


def shard_indices(count: int, rank: int, world: int) -> list[int]:
    return list(range(rank, count, world))


def scan_tfrecord(path: str) -> tuple[int, bool]:
    """Count the records of a TFRecord file by walking its length headers; flag truncation.

    Reads 8 bytes per record and seeks past the payload, so it is cheap even for ImageNet.
    """
    size = os.path.getsize(path)
    count, pos = 0, 0
    with open(path, "rb") as f:
        while pos < size:
            if pos + 12 > size:
                return count, True
            f.seek(pos)
            (length,) = struct.unpack("<Q", f.read(8))
            pos += 12 + length + 4
            if pos > size:
                return count, True
            count += 1
    return count, False


def _parse_tfrecord(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    parsed = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    # ImageNet shards label classes 1..1000 (0 is background); we use 0..999.
    return parsed["image/encoded"], tf.cast(parsed["image/class/label"], tf.int32) - LABEL_OFFSET


def tfrecord_split(data_dir: str, split: str, rank: int, world: int) -> RecordSet:
    prefix = SPLIT_PREFIX[split]
    files = sorted(glob.glob(os.path.join(data_dir, f"{prefix}-*")))
    scans = [scan_tfrecord(f) for f in files]
    total = sum(n for n, _ in scans)
    by_file = len(files) >= world
    mine = shard_indices(len(files), rank, world) if by_file else list(range(len(files)))
    my_files = [files[i] for i in mine]
    truncated = sum(scans[i][1] for i in mine) if by_file else sum(t for _, t in scans) if rank == 0 else 0
    num_examples = sum(scans[i][0] for i in mine) if by_file else len(shard_indices(total, rank, world))
    if total == 0:
        raise DataError(f"--data_dir {data_dir}: the {prefix}-* files hold no records")

    def records(seed: int | None) -> tf.data.Dataset:
        order = list(my_files)
        if seed is not None:
            order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
        files_ds = tf.data.Dataset.from_tensor_slices(order)
        ds = files_ds.interleave(
            # ignore_errors: a truncated or corrupt file ends early instead of failing the run.
            lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20).ignore_errors(),
            cycle_length=max(1, min(16, len(order))),
            block_length=1,
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        if not by_file:
            ds = ds.shard(world, rank)
        return ds.map(_parse_tfrecord, num_parallel_calls=AUTOTUNE)

    return RecordSet(records, num_examples, total, None, truncated)


def _class_labels(classes: list[str]) -> dict[str, int]:
    """ImageNet synset folders keep their standard index; other names are numbered in sorted order."""
    synsets = {s: i for i, s in enumerate(imagenet_synsets())}
    if classes and all(c in synsets for c in classes):
        return {c: synsets[c] for c in classes}
    return {c: i for i, c in enumerate(sorted(classes))}


def folder_split(data_dir: str, split: str, rank: int, world: int) -> RecordSet:
    root = _split_folder(data_dir, split)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    labels = _class_labels(classes)
    items = sorted(
        (str(f), labels[c]) for c in classes for f in (root / c).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
    )
    if not items:
        raise DataError(f"{root}: no images in <class>/ folders for the {split} split")
    mine = [items[i] for i in shard_indices(len(items), rank, world)]
    num_classes = max(labels.values()) + 1

    def records(seed: int | None) -> tf.data.Dataset:
        order = mine if seed is None else [mine[i] for i in np.random.default_rng(seed).permutation(len(mine))]
        paths = tf.constant([p for p, _ in order])
        ids = tf.constant([l for _, l in order], tf.int32)
        ds = tf.data.Dataset.from_tensor_slices((paths, ids))
        return ds.map(lambda p, l: (tf.io.read_file(p), l), num_parallel_calls=AUTOTUNE, deterministic=True)

    return RecordSet(records, len(mine), len(items), num_classes)


def tfds_split(name: str, data_dir: str | None, split: str, rank: int, world: int) -> RecordSet:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # unknown name or unreadable dir: one line, not a traceback
        raise DataError(f"--dataset tfds:{name}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    splits = builder.info.splits
    if not splits:
        raise DataError(f"--dataset tfds:{name}: not prepared in {data_dir or builder.data_dir}; build it with tfds first")
    wanted = "train" if split == "train" else next((s for s in ("validation", "test") if s in splits), None)
    if wanted is None or wanted not in splits:
        raise DataError(f"--dataset tfds:{name}: no split for {split}; has {', '.join(splits)}")
    info = splits[wanted]
    total = info.num_examples
    num_classes = builder.info.features["label"].num_classes

    def records(seed: int | None) -> tf.data.Dataset:
        read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=16)
        ds = builder.as_dataset(split=wanted, shuffle_files=seed is not None, read_config=read_config,
                                decoders={"image": tfds.decode.SkipDecoding()})
        ds = ds.shard(world, rank)
        return ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)), num_parallel_calls=AUTOTUNE)

    return RecordSet(records, len(shard_indices(total, rank, world)), total, num_classes)


def detect_format(data_dir: str) -> str:
    if glob.glob(os.path.join(data_dir, "train-*")) or glob.glob(os.path.join(data_dir, "validation-*")):
        return "tfrecord"
    if any((Path(data_dir) / n).is_dir() for n in ("train", "validation", "val")):
        return "folder"
    raise DataError(f"--data_dir {data_dir}: neither train-*/validation-* TFRecords nor train/ and validation/ folders")


def open_split(dataset: str, data_dir: str | None, split: str, rank: int = 0, world: int = 1) -> RecordSet:
    """`dataset` is auto, tfrecord, folder or tfds:NAME; `split` is train or eval."""
    kind = locate_split(dataset, data_dir, split)
    if kind == "tfds":
        return tfds_split(dataset[len("tfds:"):], data_dir, split, rank, world)
    if kind == "tfrecord":
        return tfrecord_split(data_dir, split, rank, world)
    return folder_split(data_dir, split, rank, world)


def _split_folder(data_dir: str, split: str) -> Path | None:
    names = ["train"] if split == "train" else ["validation", "val"]
    return next((Path(data_dir) / n for n in names if (Path(data_dir) / n).is_dir()), None)


def locate_split(dataset: str, data_dir: str | None, split: str) -> str:
    """How `split` is stored ("tfrecord", "folder" or "tfds") once its files are found; a DataError naming
    what is missing otherwise. Directory listings only: the trainer checks before it writes anything."""
    if dataset.startswith("tfds:"):
        return "tfds"
    if not data_dir:
        raise DataError("--data_dir is required for TFRecord and folder datasets")
    if not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir}: no such directory")
    kind = detect_format(data_dir) if dataset == "auto" else dataset
    if kind == "tfrecord":
        prefix = SPLIT_PREFIX[split]
        if not glob.glob(os.path.join(data_dir, f"{prefix}-*")):
            raise DataError(f"--data_dir {data_dir}: no {prefix}-* TFRecord files for the {split} split")
    elif kind == "folder":
        if _split_folder(data_dir, split) is None:
            names = ["train/"] if split == "train" else ["validation/", "val/"]
            raise DataError(f"--data_dir {data_dir}: no {' or '.join(names)} folder for the {split} split")
    else:
        raise DataError(f"--dataset {dataset}: valid: auto, tfrecord, folder, tfds:NAME")
    return kind
