"""`--mode benchmark`: training and inference throughput and latency on synthetic data.

Synthetic data takes the input pipeline out of the measurement, so the figures are the
model's. Results are logged under the reference's dllogger keys; throughput is summed over
ranks and also reported per GPU (per rank).
"""
from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from effnet import dist
from effnet.core.config.model import ModelConfig
from effnet.core.config.train import TrainConfig
from effnet.core.dllogger import DLLogger
from effnet.model.efficientnet import build_model
from effnet.train.metrics import latency_stats, throughput
from effnet.train.optimizer import build_optimizer, current_learning_rate
from effnet.train.precision import policy_name
from effnet.train.step import StepConfig, TrainStep


def synthetic_batch(batch: int, size: int, num_classes: int, seed: int) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(batch, size, size, 3)).astype(np.float32)
    labels = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, size=batch)]
    return tf.constant(images), tf.constant(labels)


# Synthetic data stands in for ImageNet-1k, so the learning-rate schedule is ImageNet's.
IMAGENET_TRAIN_EXAMPLES = 1_281_167


def benchmark_training(model, cfg: TrainConfig, logger: DLLogger) -> dict[str, float]:
    steps_per_epoch = cfg.steps_per_epoch or max(1, IMAGENET_TRAIN_EXAMPLES // cfg.global_batch(dist.size()))
    optimizer = build_optimizer(cfg, dist.size(), steps_per_epoch)
    step = TrainStep(model, optimizer, StepConfig(cfg.label_smoothing, cfg.weight_decay, cfg.grad_accum_steps, cfg.use_xla))
    per_update = cfg.train_batch_size * cfg.grad_accum_steps
    images, labels = synthetic_batch(per_update, cfg.train_img_size, model.output_shape[-1], seed=dist.rank())
    step.broadcast_initial_state()
    for _ in range(cfg.benchmark_warmup_steps):
        step(images, labels)
    interval_start = total_start = time.perf_counter()
    for i in range(1, cfg.benchmark_steps + 1):
        loss, _ = step(images, labels)
        if i % cfg.log_steps == 0 or i == cfg.benchmark_steps:
            loss = float(loss)  # syncs the device
            now = time.perf_counter()
            steps_done = i % cfg.log_steps or cfg.log_steps
            rate = throughput(steps_done * per_update * dist.size(), now - interval_start)
            logger.log((0, i), {"training_loss": loss, "learning_rate": current_learning_rate(optimizer),
                                "examples/second": rate})
            interval_start = now
    seconds = time.perf_counter() - total_start
    total_rate = float(dist.allreduce_sum(tf.constant(throughput(cfg.benchmark_steps * per_update, seconds)), "bench_train"))
    return {"avg_exp_per_second_training": total_rate,
            "avg_exp_per_second_training_per_GPU": total_rate / dist.size()}


def benchmark_inference(model, cfg: TrainConfig) -> dict[str, float]:
    infer = tf.function(lambda x: model(x, training=False), jit_compile=cfg.use_xla)
    images, _ = synthetic_batch(cfg.eval_batch_size, cfg.eval_img_size, model.output_shape[-1], seed=1000 + dist.rank())
    for _ in range(max(1, cfg.benchmark_warmup_steps)):
        infer(images).numpy()
    times = []
    for _ in range(cfg.benchmark_steps):
        t0 = time.perf_counter()
        infer(images).numpy()
        times.append(time.perf_counter() - t0)
    rate = throughput(cfg.eval_batch_size * len(times), sum(times))
    total_rate = float(dist.allreduce_sum(tf.constant(rate), "bench_infer"))
    return {
        "avg_exp_per_second_eval": total_rate,
        "avg_exp_per_second_eval_per_GPU": total_rate / dist.size(),
        "avg_time_per_exp_eval": 1000.0 / rate,
        **latency_stats(times),
    }


def run_benchmark(model_cfg: ModelConfig, cfg: TrainConfig, logger: DLLogger) -> dict[str, float]:
    model = build_model(model_cfg, dtype_policy=policy_name(cfg.use_amp, cfg.amp_dtype),
                        allreduce=dist.batch_norm_allreduce())
    results = {"comment": "benchmark on synthetic data", **benchmark_training(model, cfg, logger)}
    results.update(benchmark_inference(model, cfg))
    logger.log((), results)
    return results
