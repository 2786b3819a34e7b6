"""Stage schedule (a pure function of the epoch) and EMA math."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from effnet.train.ema import ExponentialMovingAverage, averaged_variables
from effnet.core.stages import StageSchedule


def test_single_stage_is_the_final_settings():
    s = StageSchedule(max_epochs=10, n_stages=1, base_img_size=128, train_img_size=224, mixup_alpha=0.2,
                      raug_magnitude=15)
    stage = s.at_epoch(7)
    assert (stage.index, stage.image_size, stage.mixup_alpha, stage.raug_magnitude) == (0, 224, 0.2, 15)


def test_stages_interpolate_from_base_to_final():
    s = StageSchedule(max_epochs=350, n_stages=4, base_img_size=128, train_img_size=300, base_randaug_mag=5,
                      raug_magnitude=15, base_mixup=0.0, mixup_alpha=0.3)
    stages = s.stages()
    assert [st.image_size for st in stages] == [128, 185, 243, 300]
    assert [round(st.raug_magnitude, 2) for st in stages] == [5.0, 8.33, 11.67, 15.0]
    assert [round(st.mixup_alpha, 2) for st in stages] == [0.0, 0.1, 0.2, 0.3]
    assert [(st.first_epoch, st.last_epoch) for st in stages] == [(0, 87), (87, 174), (174, 261), (261, 350)]


@pytest.mark.parametrize("epoch,index", [(0, 0), (86, 0), (87, 1), (260, 2), (261, 3), (349, 3)])
def test_epoch_to_stage_is_pure(epoch, index):
    s = StageSchedule(max_epochs=350, n_stages=4)
    assert s.at_epoch(epoch).index == index


def test_bad_stage_count():
    with pytest.raises(ValueError, match="n_stages must be in"):
        StageSchedule(max_epochs=3, n_stages=4)


def _bn_model():
    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization()(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dropout(0.1)(x)))


def test_ema_follows_the_warmup_formula_and_covers_bn_statistics():
    model = _bn_model()
    names = {v.path for v in averaged_variables(model)}
    assert any("moving_mean" in n for n in names) and any("moving_variance" in n for n in names)
    assert not any("seed_generator" in n for n in names)    # integer RNG state is not averaged
    ema = ExponentialMovingAverage(model, decay=0.9999)
    kernel = model.layers[-1].kernel
    start = kernel.numpy().copy()
    expected = start.copy()
    for t in range(3):
        kernel.assign(kernel + 1.0)
        ema.update()
        decay = min(0.9999, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * kernel.numpy()
    shadow = ema.shadows[[v.path for v in averaged_variables(model)].index(kernel.path)]
    np.testing.assert_allclose(shadow.numpy(), expected, rtol=1e-6)
    assert float(ema.current_decay()) == pytest.approx(4 / 13)


def test_ema_swap_is_undone():
    model = _bn_model()
    ema = ExponentialMovingAverage(model, decay=0.5)
    kernel = model.layers[-1].kernel
    kernel.assign(kernel + 10.0)
    ema.update()
    raw = kernel.numpy().copy()
    with ema.swapped():
        assert not np.allclose(kernel.numpy(), raw)
    np.testing.assert_array_equal(kernel.numpy(), raw)


def test_ema_decay_must_be_a_fraction():
    with pytest.raises(ValueError):
        ExponentialMovingAverage(_bn_model(), decay=1.0)
