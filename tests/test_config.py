"""Configuration as data: model config lookup, --mparams overrides, TrainConfig validation."""
from __future__ import annotations

import dataclasses

import pytest

from effnet.core.config import ConfigError, TrainConfig, apply_mparams, available_models, load_model_config
from effnet.core.config.model import parse_mparams


def test_bundled_models():
    assert available_models() == [f"b{i}" for i in range(8)]
    assert load_model_config("B4").name == "b4"


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model.*b0, b1, b2, b3, b4, b5, b6, b7"):
        load_model_config("b9")


def test_cfg_from_path(tmp_path):
    path = tmp_path / "tiny_cfg.py"
    path.write_text(
        "from effnet.core.config.model import ModelConfig\n"
        "config = ModelConfig(name='tiny', width_coefficient=0.5, depth_coefficient=0.5, resolution=64, dropout_rate=0.1)\n"
    )
    cfg = load_model_config(str(path))
    assert (cfg.name, cfg.width_coefficient, cfg.resolution) == ("tiny", 0.5, 64)


def test_cfg_path_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_model_config(str(tmp_path / "missing_cfg.py"))
    bad = tmp_path / "bad_cfg.py"
    bad.write_text("config = {'width': 1}\n")
    with pytest.raises(ConfigError, match="must define `config = ModelConfig"):
        load_model_config(str(bad))
    broken = tmp_path / "broken_cfg.py"
    broken.write_text("import nonexistent_module_xyz\n")
    with pytest.raises(ConfigError, match="failed to load: ModuleNotFoundError"):
        load_model_config(str(broken))


def test_mparams_coerce_to_field_types():
    cfg = apply_mparams(load_model_config("b0"), "num_classes=10, dropout_rate=0.5,width_coefficient=2,bn_epsilon=1e-5")
    assert cfg.num_classes == 10 and isinstance(cfg.num_classes, int)
    assert cfg.dropout_rate == 0.5
    assert cfg.width_coefficient == 2.0 and isinstance(cfg.width_coefficient, float)
    assert cfg.bn_epsilon == 1e-5


def test_mparams_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'drop_rate'.*valid keys: name \(str\), width_coefficient"):
        apply_mparams(load_model_config("b0"), "drop_rate=0.5")


@pytest.mark.parametrize("text,match", [
    ("num_classes=ten", r"num_classes: expected int, got 'ten'"),
    ("num_classes=2.5", r"expected int"),
    ("dropout_rate=abc", r"expected float"),
    ("dropout_rate", r"'dropout_rate' is not key=value"),
    ("=3", r"is not key=value"),
    ("num_classes=3,num_classes=4", r"given twice"),
    ("dropout_rate=1.5", r"dropout_rate=1.5 is out of range"),
])
def test_mparams_bad_values(text, match):
    with pytest.raises(ConfigError, match=match):
        apply_mparams(load_model_config("b0"), text)


def test_parse_mparams_empty():
    assert parse_mparams("") == {}
    assert apply_mparams(load_model_config("b0"), "") == load_model_config("b0")


def test_train_config_defaults_are_the_reference_cli_defaults():
    cfg = TrainConfig()
    assert (cfg.lr_init, cfg.lr_decay, cfg.lr_decay_rate, cfg.lr_decay_epochs, cfg.warmup_epochs) == (
        0.008, "exponential", 0.97, 2.4, 5)
    assert (cfg.optimizer, cfg.momentum, cfg.rmsprop_rho, cfg.opt_epsilon) == ("rmsprop", 0.9, 0.9, 0.001)
    assert (cfg.label_smoothing, cfg.weight_decay) == (0.1, 5e-6)
    assert (cfg.train_batch_size, cfg.eval_batch_size, cfg.train_img_size, cfg.max_epochs) == (32, 100, 224, 300)
    assert (cfg.log_steps, cfg.grad_accum_steps, cfg.use_amp, cfg.use_xla) == (100, 1, False, False)


def test_train_config_from_flags_coerces_and_rejects():
    cfg = TrainConfig.from_flags(lr_init=1, use_amp="false", seed="None", steps_per_epoch="7", optimizer="momentum")
    assert cfg.lr_init == 1.0 and isinstance(cfg.lr_init, float)
    assert cfg.use_amp is False and cfg.seed is None and cfg.steps_per_epoch == 7
    with pytest.raises(ConfigError, match=r"unknown flag\(s\) --bogus; valid: mode, cfg"):
        TrainConfig.from_flags(bogus=1)
    with pytest.raises(ConfigError, match=r"--optimizer: 'adam' is not one of rmsprop, momentum"):
        TrainConfig.from_flags(optimizer="adam")
    with pytest.raises(ConfigError, match=r"--use_xla: expected bool"):
        TrainConfig.from_flags(use_xla="maybe")
    with pytest.raises(ConfigError, match=r"--train_batch_size must be >= 1"):
        TrainConfig.from_flags(train_batch_size=0)
    with pytest.raises(ConfigError, match=r"--nesterov needs --optimizer momentum"):
        TrainConfig.from_flags(nesterov=True)


def test_every_boolean_can_be_turned_on_and_off():
    bools = [f.name for f in dataclasses.fields(TrainConfig) if f.type in ("bool", bool)]
    assert {"use_amp", "use_xla", "use_tf32", "nesterov"} <= set(bools)
    for name in bools:
        extra = {"optimizer": "momentum"} if name == "nesterov" else {}
        assert getattr(TrainConfig.from_flags(**{name: True}, **extra), name) is True
        assert getattr(TrainConfig.from_flags(**{name: False}, **extra), name) is False


def test_global_batch_and_peak_lr():
    cfg = TrainConfig(train_batch_size=256, grad_accum_steps=2, lr_init=0.005)
    assert cfg.global_batch(8) == 4096
    assert cfg.peak_lr(8) == 0.005 * 4096 / 128
