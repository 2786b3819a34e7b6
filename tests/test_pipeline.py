"""Readers, preprocessing and the input pipeline on real JPEGs from shipped photos, offline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from effnet.core.errors import DataError
from effnet.data.imagenet_example import encode_example, shard_name
from effnet.data.pipeline import InputPipeline, PipelineConfig, StageAugment
from effnet.data.preprocess import center_window, preprocess_eval, preprocess_train, random_window
from effnet.data.readers import open_split, scan_tfrecord
from effnet.data.shipped import shipped_photos


def _jpeg(seed: int, size=(48, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(image, quality=90).numpy()


def write_shards(out: Path, split: str, labels: list[int], shards: int, corrupt: set[int] = frozenset()) -> None:
    """Examples i = 0..n-1 with label labels[i]; the filename holds i so tests can identify them."""
    out.mkdir(parents=True, exist_ok=True)
    writers = [tf.io.TFRecordWriter(str(out / shard_name(split, s, shards))) for s in range(shards)]
    for i, label in enumerate(labels):
        data = b"\xff\xd8 this is not a jpeg" if i in corrupt else _jpeg(i)
        writers[i % shards].write(encode_example(data, label + 1, "n0", "x", 48, 64, f"img{i}"))
    for w in writers:
        w.close()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, "train", [i % 3 for i in range(40)], shards=4)
    write_shards(root, "validation", [i % 3 for i in range(10)], shards=2)
    return root


def labels_of(recordset, seed=None) -> list[int]:
    return [int(l) for _, l in recordset.records(seed)]


def bytes_of(recordset, seed=None) -> list[bytes]:
    return [b.numpy() for b, _ in recordset.records(seed)]


# ------------------------------------------------------------------ preprocessing

@pytest.mark.parametrize("path_index", [0, 1, 2])
def test_crop_windows_stay_inside_the_image(path_index):
    data = tf.io.read_file(str(shipped_photos()[path_index]))
    shape = tf.image.extract_jpeg_shape(data)
    for s in range(30):
        y, x, h, w = random_window(shape, 224, tf.constant([s, 7], tf.int64)).numpy()
        assert 0 <= y and 0 <= x and h >= 1 and w >= 1
        assert y + h <= shape[0] and x + w <= shape[1]
        assert 0.045 <= h * w / (shape[0] * shape[1]) <= 1.0
    y, x, h, w = center_window(shape, 224).numpy()
    assert h == w == int(224 / 256 * min(shape.numpy()[:2]))
    assert y + h <= shape[0] and x + w <= shape[1]


def test_train_and_eval_preprocessing_on_a_real_photo():
    data = tf.io.read_file(str(shipped_photos()[0]))
    train = preprocess_train(data, 64, tf.constant([1, 2], tf.int64))
    assert train.shape == (64, 64, 3) and train.dtype == tf.uint8
    again = preprocess_train(data, 64, tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(train, again)   # stateless: same seed, same crop
    evaluated = preprocess_eval(data, 64)
    assert evaluated.shape == (64, 64, 3) and evaluated.dtype == tf.float32
    assert 0 <= float(tf.reduce_min(evaluated)) and float(tf.reduce_max(evaluated)) <= 255


@pytest.mark.parametrize("flip", [True, False])
def test_random_flip_can_be_turned_off(flip):
    """Digits and text change class when mirrored: --norandom_flip keeps every train image unflipped."""
    data = _jpeg(3, size=(32, 32))
    whole = tf.cast(tf.round(preprocess_eval(data, 32, crop_padding=0)), tf.uint8).numpy()  # the whole image
    mirrored = whole[:, ::-1]
    flipped = 0
    for s in range(16):
        # min_area 1 and no crop padding: the crop is the whole image, so only the flip can change it
        image = preprocess_train(data, 32, tf.constant([s, 5], tf.int64), 1.0, 0, flip=flip).numpy()
        if np.array_equal(image, mirrored):
            flipped += 1
        else:
            np.testing.assert_array_equal(image, whole)
    assert (flipped > 0) == flip


def test_random_flip_flag_reaches_the_pipeline(shards):
    from effnet.core.config.model import ModelConfig
    from effnet.core.config.train import TrainConfig
    from effnet.data.splits import open_data

    model_cfg = ModelConfig("t", 1.0, 1.0, 32, 0.2, num_classes=3)
    assert open_data(TrainConfig(data_dir=str(shards)), model_cfg, True, False).cfg.random_flip
    cfg = TrainConfig.from_flags(data_dir=str(shards), random_flip="false")
    assert not open_data(cfg, model_cfg, True, False).cfg.random_flip


def test_random_shift_translates_within_its_bound_and_fills_black():
    """--random_shift moves the whole image by up to N pixels each way: no crop, no scale change."""
    data = _jpeg(3, size=(32, 32))
    whole = preprocess_train(data, 32, tf.constant([0, 5], tf.int64), 1.0, 0, flip=False).numpy()
    padded = np.pad(whole, [(3, 3), (3, 3), (0, 0)])
    seen = set()
    for s in range(40):
        image = preprocess_train(data, 32, tf.constant([s, 5], tf.int64), 1.0, 0, flip=False, max_shift=3).numpy()
        again = preprocess_train(data, 32, tf.constant([s, 5], tf.int64), 1.0, 0, flip=False, max_shift=3).numpy()
        np.testing.assert_array_equal(image, again)   # stateless
        offsets = [(y, x) for y in range(7) for x in range(7) if np.array_equal(padded[y:y + 32, x:x + 32], image)]
        assert offsets, f"seed {s}: not a shift of at most 3 pixels of the image"
        seen.add(offsets[0])
    assert len(seen) > 10 and {y for y, _ in seen} >= {0, 3, 6}  # both extremes and no shift all occur


def test_random_shift_keeps_each_seed_s_crop_and_flip():
    """Turning the shift on moves a seed's cropped and flipped image; it does not draw another crop or flip."""
    data = _jpeg(4)
    for s in range(6):
        seed = tf.constant([s, 9], tf.int64)
        padded = np.pad(preprocess_train(data, 40, seed).numpy(), [(2, 2), (2, 2), (0, 0)])
        shifted = preprocess_train(data, 40, seed, max_shift=2).numpy()
        assert any(np.array_equal(padded[y:y + 40, x:x + 40], shifted) for y in range(5) for x in range(5)), s


def test_random_shift_flag_is_checked_and_reaches_the_pipeline(shards):
    from effnet.core.config.model import ModelConfig
    from effnet.core.config.train import TrainConfig
    from effnet.core.errors import ConfigError
    from effnet.data.splits import open_data

    model_cfg = ModelConfig("t", 1.0, 1.0, 32, 0.2, num_classes=3)
    assert open_data(TrainConfig(data_dir=str(shards)), model_cfg, True, False).cfg.random_shift == 0
    cfg = TrainConfig.from_flags(data_dir=str(shards), random_shift="4")
    assert open_data(cfg, model_cfg, True, False).cfg.random_shift == 4
    with pytest.raises(ConfigError, match="--random_shift"):
        TrainConfig.from_flags(data_dir=str(shards), random_shift="-1")


def test_png_input_takes_the_full_decode_path():
    png = tf.io.encode_png(tf.zeros((30, 40, 3), tf.uint8) + 77)
    out = preprocess_eval(png, 16)
    assert out.shape == (16, 16, 3) and float(tf.reduce_mean(out)) == pytest.approx(77, abs=1)


# ------------------------------------------------------------------ readers

def test_tfrecord_reader_and_scan(shards):
    assert scan_tfrecord(str(shards / shard_name("train", 0, 4))) == (10, False)
    train = open_split("auto", str(shards), "train")
    assert (train.num_examples, train.total_examples) == (40, 40)
    assert sorted(labels_of(train)) == sorted(i % 3 for i in range(40))


@pytest.mark.parametrize("world,files", [(2, 4), (3, 2)])
def test_sharding_covers_every_example_once(tmp_path, world, files):
    write_shards(tmp_path, "train", list(range(12)), shards=files)
    seen = []
    for rank in range(world):
        split = open_split("tfrecord", str(tmp_path), "train", rank, world)
        got = labels_of(split, seed=5)
        assert len(got) == split.num_examples
        seen.extend(got)
    assert sorted(seen) == list(range(12))


def test_folder_reader(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{i}.jpg").write_bytes(_jpeg(i))
    train = open_split("auto", str(tmp_path), "train")
    assert train.num_examples == 8 and train.num_classes == 2
    assert sorted(labels_of(train)) == [0] * 4 + [1] * 4
    assert open_split("folder", str(tmp_path), "eval").total_examples == 4
    halves = [labels_of(open_split("folder", str(tmp_path), "train", r, 2)) for r in range(2)]
    assert sorted(halves[0] + halves[1]) == [0] * 4 + [1] * 4


def _ilsvrc_tars(manual: Path, synsets: list[str], per_class: int, val_count: int) -> None:
    """Tiny ILSVRC2012 tars in the layout TFDS's imagenet2012 builder reads from its manual dir."""
    import io
    import tarfile

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    manual.mkdir(parents=True)
    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        for k, synset in enumerate(synsets):
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for i in range(per_class):
                    add(inner, f"{synset}_{i}.JPEG", _jpeg(100 * k + i))
            add(outer, f"{synset}.tar", inner_bytes.getvalue())
    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in range(val_count):
            add(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", _jpeg(1000 + i))


def test_tfds_imagenet2012_built_offline(tmp_path):
    import tensorflow_datasets as tfds

    from effnet.data.imagenet_example import imagenet_synsets, imagenet_validation_synsets

    synsets = imagenet_synsets()
    chosen = [synsets[0], synsets[500], synsets[999]]
    _ilsvrc_tars(tmp_path / "manual", chosen, per_class=3, val_count=4)
    builder = tfds.builder("imagenet2012", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
    train = open_split("tfds:imagenet2012", str(tmp_path / "tfds"), "train")
    assert train.total_examples == 9 and train.num_classes == 1000
    assert sorted(labels_of(train)) == [0] * 3 + [500] * 3 + [999] * 3
    val = open_split("tfds:imagenet2012", str(tmp_path / "tfds"), "eval")
    want = [synsets.index(s) for s in imagenet_validation_synsets()[:4]]
    assert sorted(labels_of(val)) == sorted(want)
    p = InputPipeline(train, val, PipelineConfig(batch_size=3, num_classes=1000, seed=1))
    images = [f["image"].shape for f, _ in p.train(0, 32, StageAugment(augmenter="none"), 1)]
    assert images == [(3, 32, 32, 3)] * 3
    with pytest.raises(DataError, match="tfds:no_such_dataset_xyz"):
        open_split("tfds:no_such_dataset_xyz", str(tmp_path / "tfds"), "train")


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: p, "neither train-\\*/validation-\\* TFRecords nor train/ and validation/ folders"),
])
def test_missing_or_empty_data_dir_is_one_clear_error(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        open_split("auto", str(make(tmp_path)), "train")


def test_split_without_files_is_an_error(tmp_path):
    write_shards(tmp_path, "train", [0, 1], shards=1)
    with pytest.raises(DataError, match="no validation-\\* TFRecord files for the eval split"):
        open_split("tfrecord", str(tmp_path), "eval")


# ------------------------------------------------------------------ pipeline

def pipeline(root, batch=4, seed=3, rank=0, world=1, num_classes=3):
    train = open_split("tfrecord", str(root), "train", rank, world)
    val = open_split("tfrecord", str(root), "eval", rank, world)
    return InputPipeline(train, val, PipelineConfig(batch_size=batch, num_classes=num_classes, seed=seed, rank=rank))


NO_AUG = StageAugment(augmenter="none")


def test_train_batches_shape_and_count(shards):
    p = pipeline(shards)
    batches = list(p.train(0, 32, StageAugment(augmenter="autoaugment", mixup_alpha=0.2), world_size=1))
    assert len(batches) == p.steps_per_epoch(1) == 10
    features, labels = batches[0]
    assert features["image"].shape == (4, 32, 32, 3) and features["image"].dtype == tf.float32
    assert labels.shape == (4, 3)
    np.testing.assert_allclose(labels.numpy().sum(-1), 1.0, rtol=1e-6)
    assert int(features["skipped"][-1]) == 0


def test_epoch_is_deterministic_and_resume_continues_exactly(shards):
    p = pipeline(shards)
    stage = StageAugment(augmenter="randaugment", raug_magnitude=9)
    full = [(f["image"].numpy(), f["index"].numpy(), l.numpy()) for f, l in p.train(1, 24, stage, 1)]
    again = [(f["image"].numpy(), f["index"].numpy()) for f, _ in p.train(1, 24, stage, 1)]
    for (a, ai, _), (b, bi) in zip(full, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ai, bi)
    resumed = [(f["image"].numpy(), f["index"].numpy(), l.numpy()) for f, l in p.train(1, 24, stage, 1, start_step=6)]
    assert len(resumed) == len(full) - 6
    for (a, ai, al), (b, bi, bl) in zip(full[6:], resumed):
        np.testing.assert_array_equal(ai, bi)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(al, bl)
    other_epoch = [f["index"].numpy() for f, _ in p.train(2, 24, stage, 1)]
    # a new epoch reshuffles: same records, different order
    first = [(f["image"].numpy()) for f, _ in p.train(2, 24, stage, 1)][0]
    assert not np.array_equal(first, full[0][0]) and len(other_epoch) == len(full)


def test_corrupt_jpegs_are_skipped_and_counted(tmp_path):
    write_shards(tmp_path, "train", [i % 3 for i in range(24)], shards=2, corrupt={3, 10})
    write_shards(tmp_path, "validation", [i % 3 for i in range(10)], shards=1, corrupt={4})
    p = pipeline(tmp_path)
    batches = list(p.train(0, 16, NO_AUG, 1))
    assert len(batches) == 6                        # still a full epoch of batches
    indices = np.concatenate([f["index"].numpy() for f, _ in batches])
    assert len(indices) == 24
    skipped = int(batches[-1][0]["skipped"][-1])
    assert skipped == len(set(range(int(indices.max()) + 1)) - set(indices.tolist()))
    assert 1 <= skipped <= 2 + 2   # the 2 corrupt ones, seen once or twice as the epoch cycles
    evaluated = list(p.eval(16, 4))
    assert sum(int(f["image"].shape[0]) for f, _ in evaluated) == 9
    assert int(evaluated[-1][0]["skipped"][-1]) == 1


def test_truncated_tfrecord_is_read_up_to_the_cut_and_counted(tmp_path):
    write_shards(tmp_path, "train", [0, 1, 2, 0, 1, 2, 0, 1], shards=2)
    write_shards(tmp_path, "validation", [0], shards=1)
    path = tmp_path / shard_name("train", 1, 2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])        # cut the last record short
    split = open_split("tfrecord", str(tmp_path), "train")
    assert split.truncated_files == 1 and split.total_examples == 7
    assert len(labels_of(split)) == 7


def test_eval_covers_the_whole_split_across_ranks(shards):
    seen = []
    for rank in range(2):
        p = pipeline(shards, rank=rank, world=2)
        for features, labels in p.eval(16, 3):
            seen.extend(np.argmax(labels.numpy(), -1).tolist())
    assert sorted(seen) == sorted(i % 3 for i in range(10))


def test_out_of_range_labels_are_skipped(tmp_path):
    write_shards(tmp_path, "train", [0, 1, 7, 2] * 2, shards=1)
    write_shards(tmp_path, "validation", [0], shards=1)
    p = pipeline(tmp_path, batch=2)
    batches = list(p.train(0, 16, NO_AUG, 1))
    labels = np.concatenate([np.argmax(l.numpy(), -1) for _, l in batches])
    assert 7 not in labels and int(batches[-1][0]["skipped"][-1]) >= 1


@pytest.mark.parametrize("augmenter,mixup,cutmix", [("none", 0.4, 0.0), ("none", 0.0, 1.0), ("autoaugment", 0.2, 1.0),
                                                     ("randaugment", 0.0, 0.0)])
def test_deferred_augmentation_equals_augmentation_in_the_pipeline(shards, augmenter, mixup, cutmix):
    stage = StageAugment(augmenter=augmenter, raug_magnitude=7, mixup_alpha=mixup, cutmix_alpha=cutmix)
    train = open_split("tfrecord", str(shards), "train")
    here = InputPipeline(train, None, PipelineConfig(batch_size=4, num_classes=3, seed=9))
    there = InputPipeline(train, None, PipelineConfig(batch_size=4, num_classes=3, seed=9, defer_img_mixing=True))
    plain = InputPipeline(train, None, PipelineConfig(batch_size=4, num_classes=3, seed=9))
    changed = []
    for (fa, la), (fb, lb), (fc, _) in zip(here.train(0, 24, stage, 1), there.train(0, 24, stage, 1),
                                           plain.train(0, 24, StageAugment(augmenter="none"), 1)):
        mixing = mixup > 0 or cutmix > 0
        assert fb["image"].dtype == tf.uint8 and fa["image"].dtype == (tf.float32 if mixing else tf.uint8)
        assert ("mix_weight" in fb) == mixing and "mix_weight" not in fa
        on_device = tf.function(InputPipeline.augment_and_mix)(fb, stage)
        assert on_device.dtype == fa["image"].dtype
        np.testing.assert_allclose(on_device.numpy(), fa["image"].numpy(), rtol=1e-6)
        np.testing.assert_array_equal(fb["image"].numpy(), fc["image"].numpy())  # crop and flip only
        np.testing.assert_array_equal(la.numpy(), lb.numpy())
        np.testing.assert_allclose(la.numpy().sum(-1), 1.0, rtol=1e-6)
        changed.append(not np.array_equal(fa["image"].numpy(), fc["image"].numpy()))
    assert any(changed) == (augmenter != "none" or mixup > 0 or cutmix > 0)
