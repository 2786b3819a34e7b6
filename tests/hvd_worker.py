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


def main() -> None:
    dist.init()
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

    print("HVD_RESULT " + json.dumps({
        "rank": rank, "size": size, "local_rank": dist.local_rank(), "before": before,
        "after_bcast": after_bcast, "reduced0": reduced[0].numpy().tolist(), "reduced1": reduced[1],
        "reduced2": reduced[2].numpy().tolist(), "expected_mean": expected_mean, "losses": losses,
        "final": final, "gathered": gathered.tolist(),
    }), flush=True)


if __name__ == "__main__":
    main()
