"""The tf.data input pipeline: seeded, sharded, resumable, and not CPU-bound by design.

One training epoch is a pure function of (seed, rank, epoch): the file order and the
record shuffle are seeded, and every example's crop/flip/augmentation draws from a stateless
seed derived from its position in the epoch. So a run resumed at record k of epoch e sees
exactly the examples, in exactly the order and with exactly the augmentation, that an
uninterrupted run would: `train(epoch, start_record=k)` skips the serialized records before
decoding anything.

Corrupt images are dropped (`ignore_errors`) and counted exactly: each example carries its
position in the epoch, and a gap between consecutive positions is a skipped record. Each
batch carries the running count in `skipped`.

Speed: parallel interleave over files, AUTOTUNE maps, a private thread pool, partial JPEG
decode of just the crop, and augmentation applied to whole uint8 batches: AutoAugment and
RandAugment run each op once per batch on the images that drew it, and mixup/cutmix blend the
batch. Per image, only the crop, flip and resize run. With `defer_img_mixing` the batch
leaves the pipeline as uint8 with its augmentation seed and mixing plan, and
`InputPipeline.augment_and_mix` applies the same augmentation and mixing on the accelerator.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from effnet.data.mixing import blend, mixing_plan
from effnet.data.policies import AutoAugment, RandAugment
from effnet.data.preprocess import preprocess_eval, preprocess_train
from effnet.data.readers import RecordSet

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class StageAugment:
    """Augmentation settings of one training stage (the stage schedule interpolates them)."""

    augmenter: str = "autoaugment"      # autoaugment | randaugment | none
    raug_num_layers: int = 2
    raug_magnitude: float = 10.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    batch_size: int                      # per rank, per optimizer update
    num_classes: int
    seed: int = 0
    rank: int = 0
    threads: int = 0                     # private thread pool size; 0 = tf.data default
    defer_img_mixing: bool = False       # augment and mix on the device instead of here
    min_crop_area: float = 0.05          # smallest train crop, as a fraction of the image area
    crop_padding: int = 32               # eval crop: image_size / (image_size + crop_padding) of the short side
    random_flip: bool = True             # random left-right flip of training images
    random_shift: int = 0                # largest random shift of training images, in pixels (0: none)


def _options(threads: int, deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    if threads:
        options.threading.private_threadpool_size = threads
    options.experimental_optimization.map_parallelization = True
    return options


def example_seed(seed: int, rank: int, epoch: int, index: tf.Tensor) -> tf.Tensor:
    """A stateless [2] seed unique to (seed, rank, epoch, position in epoch)."""
    base = tf.constant([seed, rank * 1_000_003 + epoch], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, index)


def _count_gaps(state, element):
    """scan: turn consecutive positions into a running count of skipped records."""
    last, skipped = state
    index = element["index"]
    skipped = skipped + index - last - 1
    return (index, skipped), {**element, "skipped": skipped}


def make_augmenter(stage: StageAugment) -> AutoAugment | RandAugment | None:
    if stage.augmenter == "autoaugment":
        return AutoAugment("v0")
    if stage.augmenter == "randaugment":
        return RandAugment(stage.raug_num_layers, stage.raug_magnitude)
    if stage.augmenter == "none":
        return None
    raise ValueError(f"unknown augmenter {stage.augmenter!r}; valid: autoaugment, randaugment, none")


def augment_batch(stage: StageAugment, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The stage's AutoAugment or RandAugment on a uint8 batch, each image with its own draws."""
    augmenter = make_augmenter(stage)
    if isinstance(augmenter, RandAugment):
        return augmenter.apply_batch(images, seed, magnitude=stage.raug_magnitude)
    if augmenter is not None:
        return augmenter.apply_batch(images, seed)
    return images


class InputPipeline:
    """Train and eval datasets for one rank."""

    def __init__(self, train: RecordSet | None, eval: RecordSet | None, cfg: PipelineConfig) -> None:
        self.train_set = train
        self.eval_set = eval
        self.cfg = cfg

    def steps_per_epoch(self, world_size: int) -> int:
        """Updates per epoch, the same on every rank: the whole split over the global batch."""
        assert self.train_set is not None
        return max(1, self.train_set.total_examples // (self.cfg.batch_size * world_size))

    def step_inputs(self, image_size: int, stage: StageAugment) -> tuple[tf.TensorSpec, tf.TensorSpec]:
        """What the train step is given in a stage, augmentation and mixing done: images, labels."""
        mixed = stage.mixup_alpha > 0 or stage.cutmix_alpha > 0
        images = tf.TensorSpec([self.cfg.batch_size, image_size, image_size, 3], tf.float32 if mixed else tf.uint8)
        return images, tf.TensorSpec([self.cfg.batch_size, self.cfg.num_classes], tf.float32)

    def train(self, epoch: int, image_size: int, stage: StageAugment, world_size: int,
              start_step: int = 0, start_record: int | None = None, steps: int | None = None) -> tf.data.Dataset:
        """The batches of epoch `epoch` after `start_step` completed steps: steps_per_epoch in all.

        `start_record` is the position in the epoch's record stream to continue from; it
        defaults to start_step * batch_size, which is exact unless records were skipped before.
        `steps` caps the epoch's length (default: the whole split, `steps_per_epoch`).

        Elements: ({"image": [B,S,S,3], "index": int64 [B], "skipped": int64 [B]}, labels [B, classes]),
        labels one-hot or, with mixup/cutmix, mixed. Images are 0-255 uint8 (a quarter of the
        bytes to batch and to copy to the device; the model casts), float32 once mixup/cutmix
        blended them. With deferred mixing "image" is the uint8 batch before augmentation, with
        "augment_seed" [2] and, when mixing, "mix_weight" [B,S,S,1] and "mix_partner" [B]:
        `augment_and_mix(features, stage)` finishes it.
        """
        assert self.train_set is not None
        cfg = self.cfg
        epoch_seed = (cfg.seed * 1_000_003 + epoch) & 0x7FFFFFFF
        steps = steps or self.steps_per_epoch(world_size)
        start_record = start_step * cfg.batch_size if start_record is None else start_record
        records = self.train_set.records(epoch_seed).shuffle(SHUFFLE_BUFFER, seed=epoch_seed)
        # A rank may hold slightly fewer records than steps * batch: cycling keeps every rank in step.
        ds = records.repeat().enumerate().skip(start_record)

        def decode(index, record):
            image_bytes, label = record
            image = preprocess_train(image_bytes, image_size, example_seed(cfg.seed, cfg.rank, epoch, index),
                                     cfg.min_crop_area, cfg.crop_padding, cfg.random_flip, cfg.random_shift)
            tf.debugging.assert_less(label, cfg.num_classes, message="label out of range")
            tf.debugging.assert_non_negative(label, message="label out of range")
            return {"image": image, "index": index, "label": label}

        ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
        ds = ds.scan((tf.constant(start_record - 1, tf.int64), tf.constant(0, tf.int64)), _count_gaps)
        ds = ds.batch(cfg.batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.take(steps - start_step)
        ds = ds.map(lambda b: self._finish_batch(b, epoch, stage), num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.prefetch(AUTOTUNE).with_options(_options(cfg.threads, deterministic=True))

    def _finish_batch(self, batch: dict, epoch: int, stage: StageAugment):
        """One-hot labels, the batch's augmentation and mixing, from a seed of its first position."""
        cfg = self.cfg
        labels = tf.one_hot(batch.pop("label"), cfg.num_classes, dtype=tf.float32)
        images = batch.pop("image")
        seed = example_seed(cfg.seed, cfg.rank, epoch, -1 - batch["index"][0])
        augment_seed, mixing_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        mixing = stage.mixup_alpha > 0 or stage.cutmix_alpha > 0
        if mixing:
            shape = tf.shape(images)
            weights, label_weights, partner = mixing_plan(shape[0], shape[1], shape[2],
                                                          stage.mixup_alpha, stage.cutmix_alpha, mixing_seed)
            labels = blend(labels, label_weights, partner)
        planned = {**batch, "image": images, "augment_seed": augment_seed}
        if mixing:
            planned.update(mix_weight=weights, mix_partner=partner)
        if cfg.defer_img_mixing:
            return planned, labels
        return {**batch, "image": self.augment_and_mix(planned, stage)}, labels

    @staticmethod
    def augment_and_mix(features: dict, stage: StageAugment) -> tf.Tensor:
        """A planned batch's images, augmented and mixed: by the pipeline itself, or on the device
        when it deferred that (the batch then carries "augment_seed" and, when mixing, the plan)."""
        images = augment_batch(stage, features["image"], features["augment_seed"])
        if "mix_weight" in features:
            images = blend(tf.cast(images, tf.float32), features["mix_weight"], features["mix_partner"])
        return images

    def eval(self, image_size: int, batch_size: int) -> tf.data.Dataset:
        """This rank's whole share of the eval split, once, in order; the last batch may be partial."""
        assert self.eval_set is not None
        cfg = self.cfg
        ds = self.eval_set.records(None).enumerate()

        def decode(index, record):
            image_bytes, label = record
            return {"image": preprocess_eval(image_bytes, image_size, cfg.crop_padding), "index": index, "label": label}

        ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
        ds = ds.scan((tf.constant(-1, tf.int64), tf.constant(0, tf.int64)), _count_gaps)
        ds = ds.batch(batch_size, drop_remainder=False)
        ds = ds.map(lambda b: ({k: v for k, v in b.items() if k != "label"},
                               tf.one_hot(b["label"], cfg.num_classes, dtype=tf.float32)),
                    num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE).with_options(_options(cfg.threads, deterministic=True))
