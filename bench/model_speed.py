"""P1 and P3: our training step and inference against Keras `fit` and `predict`, same run.

    python -m bench.model_speed [--steps 20] [--rounds 3] [--json out.json]

P1: B0 at 128 px, batch 16, fp32, synthetic data. Ours is the full step (forward, backward,
weight decay, RMSprop update, EMA update, loss and top-1 returned); Keras is
keras.applications.EfficientNetB0 compiled with RMSprop, label-smoothed cross-entropy and an
accuracy metric, trained by `fit`. Both without XLA, both built and warmed up first, then timed in
turn for --rounds rounds of --steps steps; each side's median rate counts (one `fit` call alone
ranged 7.8-26 img/s on this machine). Target: ours / Keras >= 0.95.
P3: B0 inference at 224 px: throughput at batch 32 and p50 latency at batch 1, our compiled
inference function against `model.predict` on the same model. Target: >= 1.0.
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import report_figures  # noqa: E402
from effnet.core.config.model import load_model_config  # noqa: E402
from effnet.model.efficientnet import build_model  # noqa: E402
from effnet.train.ema import ExponentialMovingAverage  # noqa: E402
from effnet.train.evaluate import make_inference_fn  # noqa: E402
from effnet.train.step import StepConfig, TrainStep  # noqa: E402


def synthetic(batch: int, size: int, classes: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]
    return images, labels


def ours_training(images, labels) -> Callable[[int], float]:
    """Build and warm up our step; returns run(steps) -> img/s."""
    model = build_model(load_model_config("b0"), images.shape[1])
    step = TrainStep(model, keras.optimizers.RMSprop(0.001, rho=0.9, momentum=0.9, epsilon=1e-3),
                     StepConfig(label_smoothing=0.1, weight_decay=5e-6))
    ema = ExponentialMovingAverage(model, 0.9999)
    x, y = tf.constant(images), tf.constant(labels)

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss, correct = step(x, y)
            ema.update()
            float(loss), float(correct)
        return steps * len(images) / (time.perf_counter() - start)

    run(3)
    return run


def keras_fit_training(images, labels) -> Callable[[int], float]:
    """Build, compile and warm up Keras' EfficientNetB0; returns run(steps) -> img/s of `fit`."""
    model = keras.applications.EfficientNetB0(weights=None, input_shape=images.shape[1:], classes=1000)
    model.compile(optimizer=keras.optimizers.RMSprop(0.001, rho=0.9, momentum=0.9, epsilon=1e-3),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"],
                  jit_compile=False)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()

    def run(steps: int) -> float:
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps * len(images) / (time.perf_counter() - start)

    run(3)
    return run


def alternating_medians(runs: dict[str, Callable[[int], float]], steps: int, rounds: int) -> dict[str, float]:
    """Time each contender in turn, `rounds` times, and keep each one's median rate.

    Alternating puts both under the same machine conditions; the median drops a round that a
    neighbour's burst of work (or Keras' occasional slow `fit` call) spoiled.
    """
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            rates[name].append(run(steps))
    return {name: float(np.median(values)) for name, values in rates.items()}


def inference(steps: int) -> dict[str, float]:
    model = build_model(load_model_config("b0"), 224)
    infer = make_inference_fn(model, use_xla=False)
    batch, _ = synthetic(32, 224)
    single = batch[:1]
    out = {}
    for name, run in (("ours", lambda x: infer(tf.constant(x)).numpy()),
                      ("keras predict", lambda x: model.predict(x, batch_size=len(x), verbose=0))):
        run(batch), run(single), run(batch), run(single)
        start = time.perf_counter()
        for _ in range(max(3, steps // 4)):
            run(batch)
        out[f"{name} img/s @32"] = max(3, steps // 4) * len(batch) / (time.perf_counter() - start)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            run(single)
            times.append(time.perf_counter() - t0)
        out[f"{name} p50 ms @1"] = float(np.percentile(times, 50) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="P1: alternating timed rounds per contender")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    images, labels = synthetic(16, 128)
    p1 = alternating_medians({"ours": ours_training(images, labels), "keras": keras_fit_training(images, labels)},
                             args.steps, args.rounds)
    p1_ours, p1_keras = p1["ours"], p1["keras"]
    keras.backend.clear_session()
    p3 = inference(args.steps)
    figures = {
        "P1 training img/s, ours": p1_ours,
        "P1 training img/s, keras fit": p1_keras,
        "P1 ratio (target >= 0.95)": p1_ours / p1_keras,
        **{f"P3 {k}": v for k, v in p3.items()},
        "P3 throughput ratio (target >= 1.0)": p3["ours img/s @32"] / p3["keras predict img/s @32"],
        "P3 p50 latency ratio keras/ours (target >= 1.0)": p3["keras predict p50 ms @1"] / p3["ours p50 ms @1"],
    }
    report_figures(figures, args.json, digits=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
