"""Augmentation ops: identities, PIL agreement, graph/tf.data use, seeding, and batch mixing.

Batches from `effnet.data` are checked against images taken one at a time (`tests.augment_reference`).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

from effnet.data import mixing, ops
from effnet.data.ops import OpParams
from effnet.data.policies import POLICIES, AutoAugment, RandAugment
from tests import augment_reference as reference

SEED = tf.constant([7, 11], tf.int64)
PARAMS = OpParams()
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def _image(height: int = 37, width: int = 53, seed: int = 0, low: int = 0, high: int = 256) -> tf.Tensor:
    """A random uint8 image; odd default sizes catch off-by-one centre and border handling."""
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(low, high, (height, width, 3), dtype=np.uint8))


def _equal(a: tf.Tensor, b: tf.Tensor) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


# ------------------------------------------------------------------------ single ops

@pytest.mark.parametrize("level", [0.0, 3.0, 10.0])
@pytest.mark.parametrize("name", list(ops.OPS))
def test_op_keeps_shape_and_dtype(name: str, level: float) -> None:
    image = _image()
    out = reference.OPS[name](image, level, SEED, PARAMS)
    assert out.shape == image.shape and out.dtype == tf.uint8
    values = out.numpy()
    assert values.min() >= 0 and values.max() <= 255


def test_all_reference_ops_present() -> None:
    assert set(ops.OPS) == {"AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                            "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX",
                            "ShearY", "TranslateX", "TranslateY", "Cutout"}


@pytest.mark.parametrize("name", GEOMETRIC + ("Cutout",))
def test_level_zero_is_identity(name: str) -> None:
    image = _image()
    for seed in ([0, 1], [5, 9]):
        assert _equal(reference.OPS[name](image, 0.0, tf.constant(seed, tf.int64), PARAMS), image)


@pytest.mark.parametrize("op", [reference.color, reference.contrast, reference.brightness, reference.sharpness])
def test_enhance_factor_one_is_identity(op) -> None:
    image = _image()
    assert _equal(op(image, 1.0), image)
    assert not _equal(op(image, 0.5), image)


def test_pixel_op_identities() -> None:
    image = _image()
    assert _equal(reference.posterize(image, 8), image)
    assert set(np.unique(reference.posterize(image, 0).numpy())) == {0, 128}   # reference: 1 bit, not black
    assert _equal(reference.solarize(image, 256), image)
    assert _equal(reference.solarize_add(image, 0), image)
    assert not _equal(reference.invert(image), image)
    assert _equal(reference.invert(reference.invert(image)), image)
    assert _equal(reference.cutout(image, 0, SEED), image)


def test_autocontrast_identity_on_full_range_and_constant() -> None:
    image = _image().numpy()
    image[0, 0], image[1, 1] = 0, 255                   # every channel spans 0..255
    assert _equal(reference.autocontrast(tf.constant(image)), image)
    flat = tf.fill([9, 11, 3], tf.constant(77, tf.uint8))
    assert _equal(reference.autocontrast(flat), flat)
    stretched = reference.autocontrast(_image(low=60, high=120)).numpy()
    assert stretched.min() == 0 and stretched.max() == 255


def test_equalize_constant_image_is_identity() -> None:
    flat = tf.fill([9, 11, 3], tf.constant(200, tf.uint8))
    assert _equal(reference.equalize(flat), flat)


def test_sharpness_keeps_border() -> None:
    image = _image()
    out = reference.sharpness(image, 0.1).numpy()
    ref = image.numpy()
    for border in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):
        assert np.array_equal(out[border], ref[border])
    assert not np.array_equal(out[1:-1, 1:-1], ref[1:-1, 1:-1])


def test_cutout_greys_a_clipped_square() -> None:
    image = _image(low=0, high=100)                     # no value is the grey fill (128)
    for seed in range(4):
        grey = np.all(reference.cutout(image, 5, tf.constant([seed, 0], tf.int64)).numpy() == 128, axis=-1)
        rows, cols = np.flatnonzero(grey.any(axis=1)), np.flatnonzero(grey.any(axis=0))
        assert 0 < rows.size <= 10 and 0 < cols.size <= 10
        assert grey.sum() == rows.size * cols.size      # a filled rectangle


def test_level_to_argument_mapping() -> None:
    image = _image()
    assert _equal(reference.OPS["Posterize"](image, 5.0, SEED, PARAMS), reference.posterize(image, 2))
    assert _equal(reference.OPS["Solarize"](image, 3.0, SEED, PARAMS), reference.solarize(image, 76))
    assert _equal(reference.OPS["SolarizeAdd"](image, 3.0, SEED, PARAMS), reference.solarize_add(image, 33))
    rotated = reference.OPS["Rotate"](image, 5.0, SEED, PARAMS)
    assert _equal(rotated, reference.rotate(image, 15.0)) or _equal(rotated, reference.rotate(image, -15.0))
    shifted = reference.OPS["TranslateX"](image, 1.0, SEED, OpParams(translate_const=100))
    assert _equal(shifted, reference.translate_x(image, 10.0)) or _equal(shifted, reference.translate_x(image, -10.0))


def test_geometric_sign_is_random() -> None:
    image = _image()
    outputs = [reference.OPS["ShearX"](image, 5.0, tf.constant([s, 3], tf.int64), PARAMS).numpy() for s in range(8)]
    assert any(not np.array_equal(outputs[0], other) for other in outputs[1:])


def test_matches_pil() -> None:
    Image = pytest.importorskip("PIL.Image")
    ImageEnhance = pytest.importorskip("PIL.ImageEnhance")
    ImageOps = pytest.importorskip("PIL.ImageOps")
    image = _image(low=20, high=230)
    pil = Image.fromarray(image.numpy())
    pairs = [
        (ImageOps.equalize(pil), reference.equalize(image)),
        (ImageOps.autocontrast(pil), reference.autocontrast(image)),
        (ImageOps.posterize(pil, 3), reference.posterize(image, 3)),
        (ImageOps.solarize(pil, 100), reference.solarize(image, 100)),
        (pil.rotate(20, fillcolor=(128, 128, 128)), reference.rotate(image, 20.0)),
    ]
    for enhancer, op in [(ImageEnhance.Color, reference.color), (ImageEnhance.Contrast, reference.contrast),
                         (ImageEnhance.Brightness, reference.brightness),
                         (ImageEnhance.Sharpness, reference.sharpness)]:
        pairs += [(enhancer(pil).enhance(f), op(image, f)) for f in (0.1, 0.6, 1.9)]
    for expected, actual in pairs:
        assert _equal(np.asarray(expected), actual)


# ------------------------------------------ AutoAugment / RandAugment, one image at a time

def test_v0_policy_and_unknown_policy() -> None:
    policy = POLICIES["v0"]
    assert len(policy) == 25 and all(len(sub) == 2 for sub in policy)
    assert {name for sub in policy for name, _, _ in sub} <= set(ops.OPS)
    with pytest.raises(ValueError, match="v0"):
        AutoAugment("v9")


def _one_at_a_time(augmenter: AutoAugment | RandAugment):
    """`augmenter`'s draws for a single image, applied by the per-image reference."""
    return functools.partial(reference.augment_image, augmenter)


@pytest.mark.parametrize("augmenter", [AutoAugment(), RandAugment()], ids=["auto", "rand"])
def test_augmenter_in_dataset_map(augmenter) -> None:
    augmenter = _one_at_a_time(augmenter)
    images = tf.stack([_image(32, 40, seed=s) for s in range(3)])
    seeds = tf.constant([[s, 1] for s in range(3)], tf.int64)
    seeded = tf.data.Dataset.from_tensor_slices((images, seeds)).map(lambda im, s: augmenter(im, seed=s))
    unseeded = tf.data.Dataset.from_tensor_slices(images).map(augmenter)
    first, second, other = list(seeded), list(seeded), list(unseeded)
    for dataset, outputs in ((seeded, first), (unseeded, other)):
        assert dataset.element_spec.shape == (32, 40, 3) and dataset.element_spec.dtype == tf.uint8
        assert len(outputs) == 3 and all(out.shape == (32, 40, 3) for out in outputs)
    assert all(_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("augmenter", [AutoAugment(), RandAugment()], ids=["auto", "rand"])
def test_augmenter_seeded_is_pure(augmenter) -> None:
    """Same seed -> same output, eagerly and in a dynamic-shape graph; other seeds differ."""
    augmenter = _one_at_a_time(augmenter)
    image = _image(32, 48)
    graph = tf.function(lambda im, s: augmenter(im, seed=s),
                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64)])
    outputs = [augmenter(image, seed=tf.constant([s, 5], tf.int64)) for s in range(8)]
    for s in (0, 3):
        assert _equal(augmenter(image, seed=tf.constant([s, 5], tf.int64)), outputs[s])
        assert _equal(graph(image, tf.constant([s, 5], tf.int64)), outputs[s])
    assert any(not _equal(outputs[0], other) for other in outputs[1:])


def test_randaugment_magnitude_override() -> None:
    image = _image(32, 32)
    augmenter = _one_at_a_time(RandAugment(num_layers=2, magnitude=10.0))
    graph = tf.function(lambda im, m, s: augmenter(im, magnitude=m, seed=s))
    differs = False
    for s in range(6):
        seed = tf.constant([s, 2], tf.int64)
        strong = augmenter(image, seed=seed)
        assert _equal(augmenter(image, magnitude=10.0, seed=seed), strong)
        assert _equal(graph(image, tf.constant(10.0), seed), strong)
        differs |= not _equal(graph(image, tf.constant(0.0), seed), strong)
    assert differs


def test_randaugment_zero_layers_is_identity() -> None:
    image = _image()
    assert _equal(reference.augment_image(RandAugment(num_layers=0), image, seed=SEED), image)


# ---------------------------------------------------------------------- batched ops

def _images(height: int = 23, width: int = 19) -> tf.Tensor:
    """Four different images: two of noise, a narrow-range one and a constant one."""
    flat = tf.fill([height, width, 3], tf.constant(77, tf.uint8))
    return tf.stack([_image(height, width, seed=1), _image(height, width, seed=2, low=20, high=230),
                     _image(height, width, seed=3, low=90, high=140), flat])


# Batch op -> per-image arguments for the four images of `_images`.
BATCH_CASES = {
    "autocontrast": (ops.autocontrast, ()),
    "equalize": (ops.equalize, ()),
    "invert": (ops.invert, ()),
    "posterize": (ops.posterize, ([1, 3, 8, 0],)),
    "solarize": (ops.solarize, ([0, 100, 256, 200],)),
    "solarize_add": (ops.solarize_add, ([0, 33, 110, -40],)),
    "color": (ops.color, ([0.1, 1.0, 1.9, 0.5],)),
    "contrast": (ops.contrast, ([1.9, 0.1, 1.0, 0.6],)),
    "brightness": (ops.brightness, ([0.6, 1.9, 0.1, 1.0],)),
    "sharpness": (ops.sharpness, ([1.0, 0.6, 1.9, 0.1],)),
    "rotate": (ops.rotate, ([0.0, 20.0, -30.0, 7.5],)),
    "shear_x": (ops.shear_x, ([0.3, 0.0, -0.2, 0.1],)),
    "shear_y": (ops.shear_y, ([-0.1, 0.3, 0.0, 0.25],)),
    "translate_x": (ops.translate_x, ([5.0, -12.0, 0.0, 2.5],)),
    "translate_y": (ops.translate_y, ([-2.5, 0.0, 12.0, 7.0],)),
    "cutout_at": (ops.cutout_at, ([0, 5, 30, 3], [0, 10, 4, 22], [7, 0, 18, 9])),
}


@pytest.mark.parametrize("name", list(BATCH_CASES))
def test_batch_op_matches_single_images(name: str) -> None:
    op, args = BATCH_CASES[name]
    images = _images()
    batched = op(images, *(tf.constant(arg) for arg in args))
    assert batched.shape == images.shape and batched.dtype == tf.uint8
    for i in range(images.shape[0]):
        assert _equal(batched[i], reference.on_batch(op, images[i], *(arg[i] for arg in args)))


def test_batch_op_scalar_argument_applies_to_every_image() -> None:
    images = _images()
    assert _equal(reference.color(images, 0.3), ops.color(images, tf.fill([4], 0.3)))
    assert _equal(reference.rotate(images, 12.0), tf.stack([reference.rotate(image, 12.0) for image in images]))


def test_batch_identities() -> None:
    images = _images()
    zeros = tf.zeros([4])
    for name in GEOMETRIC + ("Cutout",):
        assert _equal(ops.OPS[name](images, zeros, SEED, PARAMS), images)
    for op in (ops.color, ops.contrast, ops.brightness, ops.sharpness):
        assert _equal(op(images, tf.ones([4])), images)
    assert _equal(reference.posterize(images, 8), images)
    assert _equal(reference.solarize(images, 256), images)
    assert _equal(reference.solarize_add(images, 0), images)
    assert _equal(reference.cutout(images, 0, SEED), images)


# Small amounts, so that translations and cutouts of the small test images stay visible.
SMALL = OpParams(cutout_const=10.0, translate_const=10.0)
# Explicit op and largest amount of the ops that draw a random sign, to check each batch image.
SIGNED = {"Rotate": (reference.rotate, 30.0), "ShearX": (reference.shear_x, 0.3), "ShearY": (reference.shear_y, 0.3),
          "TranslateX": (reference.translate_x, SMALL.translate_const),
          "TranslateY": (reference.translate_y, SMALL.translate_const)}


@pytest.mark.parametrize("name", list(ops.OPS))
def test_op_on_batch_treats_each_image_on_its_own(name: str) -> None:
    images = _images()
    levels = tf.constant([0.0, 3.0, 7.0, 10.0])
    batched = ops.OPS[name](images, levels, SEED, SMALL)
    assert batched.shape == images.shape and batched.dtype == tf.uint8
    for image, level, out in zip(images, levels, batched):
        if name in SIGNED:
            op, maximum = SIGNED[name]
            amount = level * maximum / 10.0                     # as the op scales levels
            assert _equal(out, op(image, amount)) or _equal(out, op(image, -amount))
        elif name == "Cutout":
            greyed = np.any(out.numpy() != image.numpy(), axis=-1)
            rows, cols = np.flatnonzero(greyed.any(axis=1)), np.flatnonzero(greyed.any(axis=0))
            assert np.all(out.numpy()[greyed] == 128)
            assert rows.size <= 2 * level and cols.size <= 2 * level    # half-side: level * 10 / 10
        else:
            assert _equal(out, reference.OPS[name](image, level, SEED, SMALL))


# ------------------------------------------------------------- batched AutoAugment / RandAugment

def test_apply_batch_routes_each_image_through_its_sub_policy(monkeypatch) -> None:
    monkeypatch.setitem(POLICIES, "test", (
        (("Invert", 1.0, 0), ("Posterize", 1.0, 5)),
        (("Equalize", 1.0, 0), ("AutoContrast", 1.0, 0)),
    ))
    images = tf.stack([_image(16, 12, seed=s) for s in range(8)])
    out = AutoAugment("test").apply_batch(images, seed=SEED)
    chosen = []
    for image, result in zip(images, out):
        first = _equal(result, reference.posterize(reference.invert(image), 2))
        second = _equal(result, reference.autocontrast(reference.equalize(image)))
        assert first != second
        chosen.append(first)
    assert 0 < sum(chosen) < len(chosen)


def _batch_graph(augmenter):
    return tf.function(lambda images, seed: augmenter.apply_batch(images, seed), input_signature=[
        tf.TensorSpec([None, 24, 20, 3], tf.uint8), tf.TensorSpec([2], tf.int64)])


@pytest.mark.parametrize("augmenter", [AutoAugment(), RandAugment()], ids=["auto", "rand"])
def test_apply_batch_is_pure_and_per_image(augmenter) -> None:
    """Deterministic in graph and eagerly for any batch size; images do not affect each other."""
    images = tf.stack([_image(24, 20, seed=s) for s in range(6)])
    graph = _batch_graph(augmenter)
    out = graph(images, SEED)
    assert out.shape == images.shape and out.dtype == tf.uint8
    assert _equal(augmenter.apply_batch(images, SEED), out)
    assert _equal(graph(images, SEED), out)
    assert not _equal(graph(images, tf.constant([8, 11], tf.int64)), out)
    assert sum(not _equal(a, b) for a, b in zip(out, images)) >= 3
    other = tf.concat([images[:2], 255 - images[2:3], images[3:]], axis=0)
    changed = graph(other, SEED)
    assert _equal(tf.concat([changed[:2], changed[3:]], 0), tf.concat([out[:2], out[3:]], 0))
    assert graph(images[:1], SEED).shape == (1, 24, 20, 3)
    assert graph(images[:0], SEED).shape == (0, 24, 20, 3)


@pytest.mark.parametrize("augmenter", [AutoAugment(), RandAugment()], ids=["auto", "rand"])
def test_apply_batch_in_dataset_map(augmenter) -> None:
    images = tf.stack([_image(24, 20, seed=s) for s in range(5)])
    dataset = (tf.data.Dataset.from_tensor_slices(images).batch(2).enumerate()
               .map(lambda step, batch: augmenter.apply_batch(batch, tf.stack([step, 3]))))
    assert dataset.element_spec == tf.TensorSpec([None, 24, 20, 3], tf.uint8)
    first, second = list(dataset), list(dataset)
    assert [b.shape[0] for b in first] == [2, 2, 1]
    assert all(_equal(a, b) for a, b in zip(first, second))


def test_randaugment_apply_batch_magnitude_and_zero_layers() -> None:
    images = tf.stack([_image(16, 16, seed=s) for s in range(4)])
    augmenter = RandAugment(num_layers=2, magnitude=10.0)
    strong = augmenter.apply_batch(images, SEED)
    assert _equal(augmenter.apply_batch(images, SEED, magnitude=10.0), strong)
    assert not _equal(augmenter.apply_batch(images, SEED, magnitude=tf.constant(0.0)), strong)
    assert _equal(RandAugment(num_layers=0).apply_batch(images, SEED), images)


def test_apply_batch_rejects_single_images() -> None:
    with pytest.raises(ValueError, match="B, H, W, 3"):
        AutoAugment().apply_batch(_image())


# ---------------------------------------------------------------------- batch mixing

def _batch(size: int = 8, height: int = 6, width: int = 10) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(0, 255, (size, height, width, 3)).astype(np.float32))
    labels = tf.one_hot(tf.range(size), size)
    return images, labels


def _assert_soft_labels(labels: tf.Tensor) -> None:
    np.testing.assert_allclose(tf.reduce_sum(labels, axis=1).numpy(), 1.0, rtol=1e-6)
    assert labels.numpy().min() >= 0.0


def test_mixup() -> None:
    images, labels = _batch()
    weights = mixing.mixup_weights(8, 0.4, SEED)
    mixed_images, mixed_labels = reference.mixup(images, labels, 0.4, SEED)
    assert mixed_images.shape == images.shape and mixed_labels.shape == labels.shape
    _assert_soft_labels(mixed_labels)
    w = weights.numpy()
    np.testing.assert_allclose(mixed_images.numpy(),
                               w[:, None, None, None] * images.numpy()
                               + (1 - w[:, None, None, None]) * images.numpy()[::-1], rtol=1e-5)
    np.testing.assert_allclose(np.diag(mixed_labels.numpy()), np.where(np.arange(8) == 7 - np.arange(8), 1.0, w),
                               rtol=1e-6)
    many = mixing.mixup_weights(256, 0.2, SEED).numpy()
    assert many.min() >= 0.5 and many.max() <= 1.0 and many.std() > 0


def test_cutmix_label_weight_is_pasted_area() -> None:
    images, labels = _batch()
    masks = mixing.cutmix_masks(8, 6, 10, 1.0, SEED).numpy()
    mixed_images, mixed_labels = reference.cutmix(images, labels, 1.0, SEED)
    assert masks.shape == (8, 6, 10, 1) and mixed_labels.shape == labels.shape
    _assert_soft_labels(mixed_labels)
    area = masks.mean(axis=(1, 2, 3))
    assert area.max() > 0
    expected_labels = (1 - area)[:, None] * labels.numpy() + area[:, None] * labels.numpy()[::-1]
    np.testing.assert_allclose(mixed_labels.numpy(), expected_labels, rtol=1e-6)
    expected_images = np.where(masks == 1, images.numpy()[::-1], images.numpy())
    assert np.array_equal(mixed_images.numpy(), expected_images)
    for mask in masks[..., 0]:                                # each mask is one rectangle
        assert np.array_equal(mask, np.outer(mask.any(axis=1), mask.any(axis=0)))


def test_alpha_zero_is_identity() -> None:
    images, labels = _batch()
    assert np.all(mixing.mixup_weights(8, 0.0, SEED).numpy() == 1.0)
    assert np.all(mixing.cutmix_masks(8, 6, 10, 0.0, SEED).numpy() == 0.0)
    for out_images, out_labels in (reference.mixup(images, labels, 0.0, SEED),
                                   reference.cutmix(images, labels, 0.0, SEED),
                                   reference.apply_mixing(images, labels, 0.0, 0.0, SEED)):
        assert _equal(out_images, images) and _equal(out_labels, labels)


def _partners(labels: np.ndarray) -> list[set[int]]:
    return [set(np.flatnonzero(row > 0)) for row in labels]


def test_apply_mixing_splits_halves() -> None:
    images, labels = _batch()
    mixed_images, mixed_labels = reference.apply_mixing(images, labels, 1.0, 1.0, SEED)
    _assert_soft_labels(mixed_labels)
    # Each half mixes within itself, with the reversed half.
    for row, support in enumerate(_partners(mixed_labels.numpy())):
        half_start = 0 if row < 4 else 4
        assert support <= {row, half_start + 3 - (row - half_start)}
    first_own = np.diag(mixed_labels.numpy())[:4]
    assert first_own.min() >= 0.5                            # mixup half: own weight >= 0.5
    x, mixed = images.numpy()[4:], mixed_images.numpy()[4:]
    assert np.all((mixed == x) | (mixed == x[::-1]))         # cutmix half: pixels are copied

    for mixup_alpha, cutmix_alpha in ((1.0, 0.0), (0.0, 1.0)):
        _, single = reference.apply_mixing(images, labels, mixup_alpha, cutmix_alpha, SEED)
        for row, support in enumerate(_partners(single.numpy())):
            assert support <= {row, 7 - row}


def test_mixing_in_graph_with_tensor_alpha_and_dynamic_batch() -> None:
    images, labels = _batch()
    graph = tf.function(reference.apply_mixing, input_signature=[
        tf.TensorSpec([None, 6, 10, 3], tf.float32), tf.TensorSpec([None, 8], tf.float32),
        tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int64)])
    for alphas in ((0.5, 0.0), (0.0, 0.5), (0.5, 0.5)):
        out_images, out_labels = graph(images, labels, *alphas, SEED)
        eager_images, eager_labels = reference.apply_mixing(images, labels, *alphas, SEED)
        assert _equal(out_labels, eager_labels) and _equal(out_images, eager_images)
        _assert_soft_labels(out_labels)
    out_images, out_labels = graph(images, labels, 0.0, 0.0, SEED)
    assert _equal(out_images, images) and _equal(out_labels, labels)
    odd_images, odd_labels = graph(images[:5], labels[:5], 0.5, 0.5, SEED)
    assert odd_images.shape == (5, 6, 10, 3)
    _assert_soft_labels(odd_labels)
    unseeded = tf.function(reference.cutmix)(images, labels, tf.constant(1.0))
    _assert_soft_labels(unseeded[1])
