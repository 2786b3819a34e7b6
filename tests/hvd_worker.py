"""One Horovod rank of the smoke test: run by `horovodrun -np 2` from test_horovod.py.

Each rank prints one JSON line `HVD_RESULT {...}` that the test compares across ranks.
"""
from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from effnet import dist  # noqa: E402
from effnet.train.step import StepConfig, TrainStep  # noqa: E402


def efficientnet_batch(n: int = 8):
    """A fixed batch of real photo crops and labels, the same in every process."""
    from tests.keras_reference import photo_batch

    photos = photo_batch(48)
    rng = np.random.default_rng(0)
    images = np.stack([np.roll(photos[i % len(photos)], shift=int(rng.integers(0, 48)), axis=1) for i in range(n)])
    labels = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
    return images.astype(np.float32), labels


def efficientnet_steps(rank: int, size: int, steps: int = 3) -> list[float]:
    """A tiny EfficientNet trained on this rank's slice of the fixed batch; returns the global loss per step."""
    from effnet.core.config.model import apply_mparams, load_model_config
    from effnet.model.efficientnet import build_model

    keras.utils.set_random_seed(0)
    cfg = apply_mparams(load_model_config("b0"), "width_coefficient=0.25,depth_coefficient=0.25,num_classes=4,"
                                                 "dropout_rate=0,drop_connect_rate=0")
    model = build_model(cfg, 48, allreduce=dist.batch_norm_allreduce())  # cross-replica BN with 2 ranks
    step = TrainStep(model, keras.optimizers.SGD(0.05, momentum=0.9), StepConfig(label_smoothing=0.1))
    step.broadcast_initial_state()
    images, labels = efficientnet_batch()
    per_rank = len(images) // size
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    losses = []
    for _ in range(steps):
        loss, _ = step(tf.constant(images[mine]), tf.constant(labels[mine]))
        losses.append(float(dist.allreduce_mean(loss, "effnet_loss")))
    return losses


def main() -> None:
    dist.init(horovod=True)  # started by horovodrun
    rank, size = dist.rank(), dist.size()
    keras.utils.set_random_seed(100 + rank)          # different init on each rank
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(7, activation="relu")(inputs)))
    before = [float(np.sum(w.numpy())) for w in model.weights]

    dist.broadcast_variables(model.variables, root_rank=0)
    after_bcast = [float(np.sum(w.numpy())) for w in model.weights]

    # allreduce: rank r contributes r+1 -> mean (1 + ... + size) / size
    reduced = dist.allreduce_gradients([tf.fill([4], float(rank + 1)), None, tf.constant([[rank * 2.0]])])
    expected_mean = (size + 1) / 2.0

    # Two training steps on rank-specific data; weights must stay identical across ranks.
    rng = np.random.default_rng(rank)
    x = tf.constant(rng.normal(size=(8, 5)).astype(np.float32))
    y = tf.constant(np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)])
    step = TrainStep(model, keras.optimizers.RMSprop(0.01, momentum=0.9, epsilon=1e-3), StepConfig(weight_decay=1e-4))
    step.broadcast_initial_state()
    losses = [float(step(x, y)[0]) for _ in range(2)]
    final = [w.numpy().ravel().tolist() for w in model.weights]
    gathered = dist.allgather(tf.reshape(tf.constant(float(np.sum([np.sum(f) for f in final]))), [1])).numpy()

    effnet_losses = efficientnet_steps(rank, size)

    print("HVD_RESULT " + json.dumps({
        "effnet_losses": effnet_losses,
        "rank": rank, "size": size, "local_rank": dist.local_rank(), "before": before,
        "after_bcast": after_bcast, "reduced0": reduced[0].numpy().tolist(), "reduced1": reduced[1],
        "reduced2": reduced[2].numpy().tolist(), "expected_mean": expected_mean, "losses": losses,
        "final": final, "gathered": gathered.tolist(),
    }), flush=True)


if __name__ == "__main__":
    if os.environ.get("HVD_SINGLE_PROCESS_EFFNET"):
        print("HVD_RESULT " + json.dumps({"effnet_losses": efficientnet_steps(0, 1)}), flush=True)
    else:
        main()
