"""Checkpoint fallback and resume modes, evaluation metrics on a known set, predict output."""
from __future__ import annotations

import csv
import json
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet.core.errors import ConfigError
from effnet.predict import predict, write_predictions
from effnet.train.checkpoint import Checkpointer, TrainState
from effnet.train.evaluate import evaluate


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def _checkpointer(tmp_path, model, state=None, keep=3):
    return Checkpointer(str(tmp_path), {"model": model, "state": state or TrainState()}, keep, is_chief=True)


def test_latest_corrupt_checkpoint_falls_back_to_the_previous(tmp_path):
    model, state = _model(), TrainState()
    ckpt = _checkpointer(tmp_path, model, state)
    state.global_step.assign(10)
    first = ckpt.save(10)
    kernel_at_10 = model.layers[-1].kernel.numpy().copy()
    model.layers[-1].kernel.assign(tf.zeros((3, 2)))
    state.global_step.assign(20)
    latest = ckpt.save(20)
    data_file = next(p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("ckpt-20.data"))
    data_file.write_bytes(b"garbage" * 3)

    fresh_model, fresh_state = _model(seed=1), TrainState()
    restored = _checkpointer(tmp_path, fresh_model, fresh_state).restore("auto")
    assert restored == first and latest != first
    assert int(fresh_state.global_step.numpy()) == 10
    np.testing.assert_array_equal(fresh_model.layers[-1].kernel.numpy(), kernel_at_10)


def test_partial_checkpoint_without_index_is_ignored(tmp_path):
    model, state = _model(), TrainState()
    ckpt = _checkpointer(tmp_path, model, state)
    state.global_step.assign(1)
    ckpt.save(1)
    state.global_step.assign(2)
    ckpt.save(2)
    (tmp_path / "checkpoints" / "ckpt-2.index").unlink()
    fresh = TrainState()
    assert _checkpointer(tmp_path, _model(), fresh).restore("auto").endswith("ckpt-1")
    assert int(fresh.global_step.numpy()) == 1


def test_resume_modes(tmp_path):
    assert _checkpointer(tmp_path, _model()).restore("auto") is None
    with pytest.raises(ConfigError, match="--resume must: no readable checkpoint"):
        _checkpointer(tmp_path, _model()).restore("must")
    model = _model()
    _checkpointer(tmp_path, model).save(5)
    assert _checkpointer(tmp_path, _model()).restore("never") is None
    assert _checkpointer(tmp_path, _model()).restore("must").endswith("ckpt-5")


def test_retention_keeps_the_newest(tmp_path):
    ckpt = _checkpointer(tmp_path, _model(), keep=2)
    for step in (1, 2, 3):
        ckpt.save(step)
    assert [p.rsplit("-", 1)[1] for p in ckpt.available()] == ["2", "3"]


def test_evaluate_on_a_known_set():
    # Logits are the input itself: we know each example's rank of the true class.
    logits = np.array([[5, 1, 0, 0, 0, 0], [1, 5, 0, 0, 0, 0], [0, 0, 1, 2, 3, 4], [9, 8, 7, 6, 5, 4],
                       [0, 0, 0, 0, 0, 9]], np.float32)
    labels = np.eye(6, dtype=np.float32)[[0, 1, 3, 5, 5]]   # top-1 right for 0,1,4; top-5: not example 3 (rank 6)
    ds = tf.data.Dataset.from_tensor_slices(({"image": logits, "skipped": np.zeros(5, np.int64)}, labels)).batch(2)
    result = evaluate(lambda x: tf.constant(x), ds)
    assert result["eval_examples"] == 5
    assert result["eval_accuracy_top_1"] == pytest.approx(3 / 5)
    assert result["eval_accuracy_top_5"] == pytest.approx(4 / 5)
    want = -np.mean(np.sum(labels * tf.nn.log_softmax(logits).numpy(), -1))
    assert result["eval_loss"] == pytest.approx(want, rel=1e-6)
    assert result["latency_p50"] > 0 and result["avg_exp_per_second_eval"] > 0


def test_eval_latency_leaves_out_each_new_batch_shape():
    # A new shape (the first batch, the short last one) means tracing: seconds that are not latency.
    seen = set()

    def infer(images):
        if images.shape not in seen:
            seen.add(images.shape)
            time.sleep(0.5)
        return tf.constant(images)

    images = np.eye(6, dtype=np.float32)[[0, 1, 2, 3, 4, 5, 0]]
    ds = tf.data.Dataset.from_tensor_slices(({"image": images, "skipped": np.zeros(7, np.int64)}, images)).batch(3)
    result = evaluate(infer, ds)
    assert result["eval_examples"] == 7
    assert result["latency_p99"] < 250   # only the second batch of 3 was timed
    assert result["avg_exp_per_second_eval"] > 3 / 0.25


def test_predict_writes_json_and_csv(tmp_path):
    from effnet.data.shipped import shipped_photos

    photos = [str(p) for p in shipped_photos()]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    names = [f"class{i}" for i in range(4)]

    def infer(images):
        assert images.shape[1:] == (32, 32, 3)
        return tf.tile(tf.constant([[0.0, 3.0, 1.0, 2.0]]), [images.shape[0], 1])

    rows = predict(infer, photos + [str(bad)], 32, 2, 3, names)
    assert [r["file"] for r in rows] == photos + [str(bad)]
    assert "error" in rows[-1]
    first = rows[0]["top_k"]
    assert [t["class_id"] for t in first] == [1, 3, 2] and first[0]["class_name"] == "class1"
    assert sum(t["probability"] for t in first) < 1.0 and first[0]["probability"] > first[1]["probability"]
    write_predictions(rows, str(tmp_path / "p.json"))
    assert json.loads((tmp_path / "p.json").read_text()) == rows
    write_predictions(rows, str(tmp_path / "p.csv"))
    table = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(table) == 3 * len(photos) + 1
    assert table[0]["class_name"] == "class1" and table[0]["rank"] == "1"
