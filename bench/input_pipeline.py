"""Input-pipeline throughput against the practical limit, JPEG decode alone.

    python -m bench.input_pipeline [--images 512] [--image_size 224] [--batch 64] [--seconds 20] [--json out.json]

Shards of ImageNet-like JPEGs (crops of the photos that ship in installed packages, at
ImageNet's typical ~400-500 px) are written to a temporary directory. Each pipeline then runs
over the same shards with the same threads, and images/s per core is printed with its
ratio to decode-only. Target: the full train pipeline at >= 0.6x decode-only.
With `--defer_img_mixing` (as the GPU recipes run) AutoAugment/RandAugment and mixup/cutmix move
to the device and the host pipeline crops, flips, resizes and batches uint8 images; the other
train rows run every augmentation here, on the CPU cores.

The train pipelines run as one endless epoch (`steps` past the end of the shards, which then
cycle): the bench's few hundred images would otherwise make epochs of a handful of batches, and
each epoch boundary restarts the pipeline and discards its read-ahead, a cost that an ImageNet
epoch of 1.28M images never shows.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from effnet.data.imagenet_example import encode_example, shard_name  # noqa: E402
from effnet.data.pipeline import InputPipeline, PipelineConfig, StageAugment  # noqa: E402
from effnet.data.readers import open_split  # noqa: E402
from effnet.data.shipped import shipped_photos  # noqa: E402


ENDLESS = 1 << 40   # steps: more than any bench runs, so the train epoch never ends
# What the GPU recipes run (--defer_img_mixing): AutoAugment and mixup on the device, the rest here.
DEFERRED = "train autoaugment + mixup 0.2, deferred to the device"


def write_imagenet_like_shards(out: Path, images: int, shards: int = 8, seed: int = 0) -> None:
    """`images` train and images//8 validation JPEGs: random 50-100% crops, longer side <= 500 px."""
    rng = random.Random(seed)
    photos = [Image.open(p).convert("RGB") for p in shipped_photos()]
    for split, count in (("train", images), ("validation", max(8, images // 8))):
        writers = [tf.io.TFRecordWriter(str(out / shard_name(split, i, shards))) for i in range(shards)]
        for i in range(count):
            label = i % len(photos)
            photo = photos[label]
            side = rng.uniform(0.5, 1.0)
            w, h = int(photo.width * side), int(photo.height * side)
            x, y = rng.randint(0, photo.width - w), rng.randint(0, photo.height - h)
            crop = photo.crop((x, y, x + w, y + h))
            crop.thumbnail((500, 500))
            buf = io.BytesIO()
            crop.save(buf, format="JPEG", quality=90)
            writers[i % shards].write(encode_example(buf.getvalue(), label + 1, "n0", "photo", crop.height,
                                                     crop.width, f"{split}_{i}.jpg"))
        for writer in writers:
            writer.close()


def images_per_second(dataset: tf.data.Dataset, seconds: float) -> float:
    """Steady-state rate: one warm-up element, then as many as fit in `seconds`."""
    iterator = iter(dataset.repeat())
    next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        element = next(iterator)
        features = element[0] if isinstance(element, tuple) else element
        count += int((features["image"] if isinstance(features, dict) else features).shape[0])
    return count / (time.perf_counter() - start)


def decode_only(data_dir: str, batch: int) -> tf.data.Dataset:
    """Read, parse and fully decode every JPEG: nothing a training pipeline could skip."""
    records = open_split("tfrecord", data_dir, "train").records(None)
    decoded = records.map(lambda b, l: tf.reduce_sum(tf.cast(tf.io.decode_jpeg(b, channels=3)[:1, :1], tf.int32)),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return decoded.batch(batch).prefetch(tf.data.AUTOTUNE)


def run(data_dir: str, image_size: int, batch: int, seconds: float) -> dict[str, float]:
    train = open_split("tfrecord", data_dir, "train")
    val = open_split("tfrecord", data_dir, "eval")
    pipe = InputPipeline(train, val, PipelineConfig(batch_size=batch, num_classes=1000, seed=0))
    deferring = InputPipeline(train, val, PipelineConfig(batch_size=batch, num_classes=1000, seed=0,
                                                         defer_img_mixing=True))

    def train_pipeline(stage: StageAugment, defer: bool = False) -> tf.data.Dataset:
        return (deferring if defer else pipe).train(0, image_size, stage, 1, steps=ENDLESS)

    cases = {
        "decode-only": decode_only(data_dir, batch),
        "train, no augmentation": train_pipeline(StageAugment("none")),
        "train autoaugment": train_pipeline(StageAugment("autoaugment")),
        "train randaugment (2, 10)": train_pipeline(StageAugment("randaugment", 2, 10.0)),
        "train autoaugment + mixup 0.2": train_pipeline(StageAugment("autoaugment", mixup_alpha=0.2)),
        DEFERRED: train_pipeline(StageAugment("autoaugment", mixup_alpha=0.2), defer=True),
        "eval": pipe.eval(image_size, batch),
    }
    return {name: images_per_second(ds, seconds) for name, ds in cases.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.input_pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        write_imagenet_like_shards(Path(tmp), args.images)
        rates = run(tmp, args.image_size, args.batch, args.seconds)
    reference = rates["decode-only"]
    print(f"input pipeline, {args.image_size} px, batch {args.batch}, {cores} cores")
    width = max(map(len, rates)) + 2
    print(f"{'pipeline':<{width}}{'img/s':>10}{'img/s/core':>12}{'vs decode':>11}")
    for name, rate in rates.items():
        print(f"{name:<{width}}{rate:>10.1f}{rate / cores:>12.1f}{rate / reference:>10.2f}x")
    result = {"cores": cores, "image_size": args.image_size, "batch": args.batch,
              "images_per_second": rates, "ratio_to_decode_only": {k: v / reference for k, v in rates.items()}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
