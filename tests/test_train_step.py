"""Our training step: exact gradient accumulation, loss scaling, XLA, schedule and optimizer."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet.core.config.model import apply_mparams, load_model_config
from effnet.core.config.train import TrainConfig
from effnet.model.efficientnet import build_model
from effnet.train.optimizer import build_optimizer, build_schedule
from effnet.core.config.train import peak_learning_rate
from effnet.train.schedules import WarmupDecay
from effnet.train.step import StepConfig, TrainStep, cross_entropy, decayed_variables


def dense_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def data(n: int = 8, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
    return tf.constant(x), tf.constant(y)


def run_steps(accum: int, steps: int = 3, use_xla: bool = False, optimizer=None):
    model = dense_model()
    opt = optimizer or keras.optimizers.RMSprop(0.01, rho=0.9, momentum=0.9, epsilon=1e-3)
    step = TrainStep(model, opt, StepConfig(label_smoothing=0.1, weight_decay=1e-3, grad_accum_steps=accum,
                                            use_xla=use_xla))
    losses = []
    for i in range(steps):
        x, y = data(seed=i)
        loss, correct = step(x, y)
        losses.append(float(loss))
        assert 0 <= float(correct) <= 8
    return [w.numpy() for w in model.weights], losses


@pytest.mark.parametrize("accum", [2, 4])
def test_gradient_accumulation_equals_the_big_batch_step(accum):
    big, big_losses = run_steps(1)
    acc, acc_losses = run_steps(accum)
    for a, b in zip(big, acc):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(big_losses, acc_losses, rtol=1e-5)


def test_first_update_already_uses_every_micro_batch():
    """The reference's first accumulated update used one micro-batch; ours uses all of them."""
    model = dense_model()
    before = [w.numpy() for w in model.weights]
    step = TrainStep(model, keras.optimizers.SGD(0.1), StepConfig(label_smoothing=0.0, grad_accum_steps=2))
    x, y = data()
    step(x, y)
    moved = [not np.allclose(a, w.numpy()) for a, w in zip(before, model.weights)]
    assert all(moved)
    with pytest.raises(ValueError, match="not divisible by grad_accum_steps 3"):
        TrainStep(dense_model(), keras.optimizers.SGD(0.1), StepConfig(grad_accum_steps=3))(x, y)


def test_xla_step_matches_the_graph_step():
    ref, _ = run_steps(1, steps=2)
    xla, _ = run_steps(1, steps=2, use_xla=True)
    for a, b in zip(ref, xla):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cross_entropy_label_smoothing():
    labels = tf.constant([[0.0, 1.0, 0.0, 0.0]])
    logits = tf.constant([[0.0, 2.0, 0.0, 0.0]])
    smooth = 0.1
    p = tf.nn.softmax(logits).numpy()[0]
    target = np.array([0.025, 0.925, 0.025, 0.025])
    want = -(target * np.log(p)).sum()
    assert float(cross_entropy(labels, logits, smooth)[0]) == pytest.approx(want, rel=1e-6)


def test_weight_decay_covers_conv_and_dense_not_bn_or_depthwise():
    model = build_model(apply_mparams(load_model_config("b0"), "width_coefficient=0.25,depth_coefficient=0.25"), 32)
    names = {v.path for v in decayed_variables(model)}
    assert any("stem_conv/kernel" in n for n in names)
    assert any("predictions/kernel" in n for n in names) and any("predictions/bias" in n for n in names)
    assert any("se_reduce/bias" in n for n in names)
    assert not any("_bn/" in n for n in names)
    assert not any("dwconv" in n for n in names)


def test_mixed_float16_step_with_dynamic_loss_scaling():
    # The policy is the model's: Keras's global one stays float32.
    model = build_model(apply_mparams(load_model_config("b0"),
                                      "width_coefficient=0.25,depth_coefficient=0.25,num_classes=4"), 32,
                        dtype_policy="mixed_float16")
    inner = keras.optimizers.SGD(0.01)
    opt = keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0 ** 15)
    step = TrainStep(model, opt, StepConfig(label_smoothing=0.1, weight_decay=5e-6))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32))
    y = tf.constant(np.eye(4, dtype=np.float32)[[0, 1, 2, 3]])
    for _ in range(2):
        loss, _ = step(x, y)
        assert np.isfinite(float(loss))
    assert all(np.isfinite(w.numpy()).all() for w in model.trainable_weights)
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert model.get_layer("stem_conv").compute_dtype == "float16"

    # An overflowing scale skips the update and halves the scale.
    opt.dynamic_scale.assign(2.0 ** 120)  # float16 gradients overflow
    before = [w.numpy() for w in model.trainable_weights]
    step(x, y)
    assert float(opt.dynamic_scale) == 2.0 ** 119
    for a, w in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(a, w.numpy())


def test_warmup_then_cosine_to_zero():
    s = WarmupDecay(peak=1.0, total_steps=100, warmup_steps=10, decay="cosine")
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    assert float(s(55)) == pytest.approx(0.5, abs=1e-6)
    assert float(s(100)) == pytest.approx(0.0, abs=1e-7)
    values = [float(s(i)) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_exponential_staircase_decay():
    s = WarmupDecay(peak=2.0, total_steps=100, warmup_steps=0, decay="exponential", decay_rate=0.5, decay_steps=10)
    assert [float(s(i)) for i in (0, 9, 10, 25)] == pytest.approx([2.0, 2.0, 1.0, 0.5])


def test_schedule_from_config_scales_with_the_global_batch():
    cfg = TrainConfig(lr_init=0.005, train_batch_size=1024, lr_decay="cosine", warmup_epochs=5, max_epochs=500)
    steps = 1_281_167 // cfg.global_batch(8)
    schedule = build_schedule(cfg, world_size=8, steps_per_epoch=steps)
    assert schedule.peak == pytest.approx(0.32)     # the B0 8xA100 AMP recipe
    assert steps == 156 and schedule.warmup_steps == 5 * 156 and schedule.total_steps == 500 * 156
    assert peak_learning_rate(0.008, 128) == 0.008


def test_optimizer_choices():
    rms = build_optimizer(TrainConfig(), 1, steps_per_epoch=10)
    assert isinstance(rms, keras.optimizers.RMSprop) and rms.rho == 0.9 and rms.epsilon == 1e-3
    sgd = build_optimizer(TrainConfig(optimizer="momentum", nesterov=True), 1, steps_per_epoch=10)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov
    amp = build_optimizer(TrainConfig(use_amp=True), 1, steps_per_epoch=10)
    assert isinstance(amp, keras.optimizers.LossScaleOptimizer)
    bf16 = build_optimizer(TrainConfig(use_amp=True, amp_dtype="bfloat16"), 1, steps_per_epoch=10)
    assert not isinstance(bf16, keras.optimizers.LossScaleOptimizer)
