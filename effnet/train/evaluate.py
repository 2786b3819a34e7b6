"""Evaluation over the whole validation split, every rank's share combined.

Each rank runs its shard once; loss and top-1/top-5 counts are summed locally and then
allreduced once, so the metrics are those of the full split (the reference reported
rank-local numbers on a truncated subset). Latency is per batch on this rank, excluding the
first batch of each shape: that call traces (and with XLA compiles) the inference function, so
the short last batch of a split would otherwise report seconds of tracing as its latency.
"""
from __future__ import annotations

import time

import tensorflow as tf

from effnet import dist
from effnet.train.metrics import latency_stats, throughput
from effnet.train.step import cross_entropy


def make_inference_fn(model, use_xla: bool):
    """Traced per exact shape, like the train step, so a resumed run evaluates with the same kernels."""
    return tf.function(lambda images: model(images, training=False), jit_compile=use_xla)


@tf.function
def _batch_sums(labels, logits):
    loss = tf.reduce_sum(cross_entropy(labels, logits, 0.0))
    target = tf.argmax(labels, -1, output_type=tf.int32)
    logits = tf.cast(logits, tf.float32)
    top1 = tf.reduce_sum(tf.cast(tf.math.in_top_k(target, logits, 1), tf.float32))
    top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(target, logits, min(5, logits.shape[-1])), tf.float32))
    return tf.stack([loss, top1, top5, tf.cast(tf.shape(labels)[0], tf.float32)])


def evaluate(infer, dataset: tf.data.Dataset) -> dict[str, float]:
    """eval_loss, eval_accuracy_top_1/top_5 over the whole split, throughput and latency."""
    sums = tf.zeros([4])
    skipped = 0
    times: list[float] = []
    examples_timed = 0
    traced_shapes: set[tuple] = set()
    for features, labels in dataset:
        shape = tuple(features["image"].shape)
        start = time.perf_counter()
        logits = infer(features["image"])
        batch_sums = _batch_sums(labels, logits).numpy()  # .numpy() waits for the device
        if shape in traced_shapes:
            times.append(time.perf_counter() - start)
            examples_timed += int(labels.shape[0])
        traced_shapes.add(shape)
        sums += batch_sums
        skipped = int(features["skipped"][-1])
    total = dist.allreduce_sum(tf.concat([sums, [float(skipped)]], 0), "eval_sums").numpy()
    loss, top1, top5, count, skipped_total = total
    if count == 0:
        raise RuntimeError("the evaluation split yielded no examples")
    result = {
        "eval_loss": float(loss / count),
        "eval_accuracy_top_1": float(top1 / count),
        "eval_accuracy_top_5": float(top5 / count),
        "eval_examples": int(count),
        "eval_skipped_records": int(skipped_total),
    }
    # Every rank joins this allreduce, also one whose shard fit in a single (untimed) batch.
    rate = throughput(examples_timed, sum(times)) if times else 0.0
    total_rate = float(dist.allreduce_sum(tf.constant(rate), "eval_rate"))
    if times:
        result.update({
            "avg_exp_per_second_eval": total_rate,
            "avg_exp_per_second_eval_per_GPU": total_rate / dist.size(),
            "avg_time_per_exp_eval": 1000.0 / rate,
            **latency_stats(times),
        })
    return result


def evaluate_raw_and_ema(infer, ema, eval_dataset, **extra) -> list[dict]:
    """Evaluate the raw weights and, with EMA, the averaged ones; `eval_dataset()` makes a fresh pass."""
    results = [{"comment": "eval using original weights", **extra, **evaluate(infer, eval_dataset())}]
    if ema is not None:
        with ema.swapped():
            results.append({"comment": "eval using EMA weights", **extra, **evaluate(infer, eval_dataset())})
    return results
