"""The one definition of the classic ImageNet TFRecord layout, shared by writer and reader.

This is the layout of Inception's `build_imagenet_data.py` and the TF Model Garden: each record is a
`tf.train.Example` holding one JPEG and its class. `tools/make_tfrecords.py` (real data),
`tools/demo_data.py` (offline demo sets) and the input pipeline all go through this module, so a
key or a label convention can only change in one place.

Labels are 1-based (1..1000 for ImageNet; 0 is reserved for "background"), as in the classic
layout; a reader subtracts `LABEL_OFFSET` to get a 0-based class index. Shards are named
`train-00003-of-01024` and `validation-00000-of-00128`.

The 1000 synsets and their names come from files inside the tensorflow-datasets wheel, read
straight from disk (works offline and without importing tensorflow_datasets, which is slow):
  - `datasets/imagenet2012/labels.txt`: the synsets in the standard (sorted) order;
  - `datasets/imagenet2012/validation_labels.txt`: the synset of each of the 50,000 official
    validation images, in sorted-filename order;
  - `datasets/siscore/labels.py`: its `IMAGENET_LABELS_LIST` holds the 1000 human-readable names
    in the same order. It is the only synset-to-name table in the wheel, so it is parsed (not
    imported); should a tensorflow-datasets upgrade drop it, `imagenet_class_names` falls back to
    the synsets themselves.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

import tensorflow as tf

LABEL_OFFSET = 1  # stored label = 0-based class index + LABEL_OFFSET
NUM_IMAGENET_CLASSES = 1000

FEATURE_SPEC: dict[str, tf.io.FixedLenFeature] = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value="JPEG"),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}

_TFDS_SYNSETS = "datasets/imagenet2012/labels.txt"
_TFDS_VALIDATION_SYNSETS = "datasets/imagenet2012/validation_labels.txt"
_TFDS_NAMES = "datasets/siscore/labels.py"
_TFDS_NAMES_VARIABLE = "IMAGENET_LABELS_LIST"


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def encode_example(image_bytes: bytes, label: int, synset: str, text: str, height: int, width: int,
                   filename: str) -> bytes:
    """Serialise one JPEG and its 1-based LABEL as a classic ImageNet `tf.train.Example`.

    Serialisation is deterministic (map keys sorted), so the same inputs always give the same bytes.
    """
    if label < LABEL_OFFSET:
        raise ValueError(f"label must be >= {LABEL_OFFSET} (labels are 1-based), got {label}")
    feature = {
        "image/encoded": _bytes_feature(image_bytes),
        "image/format": _bytes_feature(b"JPEG"),
        "image/class/label": _int64_feature(label),
        "image/class/synset": _bytes_feature(synset.encode()),
        "image/class/text": _bytes_feature(text.encode()),
        "image/height": _int64_feature(height),
        "image/width": _int64_feature(width),
        "image/filename": _bytes_feature(filename.encode()),
        "image/colorspace": _bytes_feature(b"RGB"),
        "image/channels": _int64_feature(3),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00003-of-00008`: the classic shard file name (INDEX is 0-based)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1}")
    return f"{split}-{index:05d}-of-{count:05d}"


def _tfds_file(relative: str) -> Path:
    """A data file inside the installed tensorflow-datasets package, found without importing it."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("tensorflow-datasets is not installed; it carries the ImageNet label lists")
    return Path(next(iter(spec.submodule_search_locations))) / relative


@functools.cache
def _synsets() -> tuple[str, ...]:
    synsets = tuple(_tfds_file(_TFDS_SYNSETS).read_text().split())
    if len(synsets) != NUM_IMAGENET_CLASSES:
        raise RuntimeError(f"{_TFDS_SYNSETS} lists {len(synsets)} synsets, expected {NUM_IMAGENET_CLASSES}")
    return synsets


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet synsets in standard order: synset i has label i + LABEL_OFFSET."""
    return list(_synsets())


@functools.cache
def _class_names() -> tuple[str, ...]:
    path = _tfds_file(_TFDS_NAMES)
    if path.is_file():
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name) and node.targets[0].id == _TFDS_NAMES_VARIABLE):
                names = tuple(ast.literal_eval(node.value))
                if len(names) == NUM_IMAGENET_CLASSES:
                    return names
    return _synsets()


def imagenet_class_names() -> list[str]:
    """Human-readable names ("tench, Tinca tinca", ...) in synset order; the synsets if the table is missing."""
    return list(_class_names())


def imagenet_validation_synsets() -> list[str]:
    """The synset of each of the 50,000 official validation images, in sorted-filename order."""
    return _tfds_file(_TFDS_VALIDATION_SYNSETS).read_text().split()
