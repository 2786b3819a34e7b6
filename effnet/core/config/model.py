"""`ModelConfig`, the data that fully describes one EfficientNet variant, and how configs are found.

`--cfg b0` loads the bundled module `effnet.core.config.models.b0`; `--cfg path/to/my_cfg.py`
loads a user file. Either must define `config = ModelConfig(...)`.
`--mparams key=value,...` then overrides scalar fields, coerced to their types.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
from pathlib import Path

from effnet.core.coerce import coerce, field_types, type_name
from effnet.core.errors import ConfigError
from effnet.core.architecture import BASE_BLOCKS, BlockSpec
from effnet.core.config.nvidia import bundled_model_for, read_mparams_key


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters. Resolution is the variant's native train/eval size."""

    name: str
    width_coefficient: float
    depth_coefficient: float
    resolution: int
    dropout_rate: float
    num_classes: int = 1000
    drop_connect_rate: float = 0.2
    depth_divisor: int = 8
    stem_filters: int = 32
    top_filters: int = 1280
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    sync_batch_norm: bool = True     # BN statistics over the global batch when several Horovod ranks train
    blocks: tuple[BlockSpec, ...] = BASE_BLOCKS

    def __post_init__(self) -> None:
        checks = {
            "width_coefficient": self.width_coefficient > 0,
            "depth_coefficient": self.depth_coefficient > 0,
            "resolution": self.resolution >= 32,
            "dropout_rate": 0 <= self.dropout_rate < 1,
            "num_classes": self.num_classes >= 1,
            "drop_connect_rate": 0 <= self.drop_connect_rate < 1,
            "depth_divisor": self.depth_divisor >= 1,
            "bn_momentum": 0 <= self.bn_momentum < 1,
            "bn_epsilon": self.bn_epsilon > 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"model config {self.name}: {key}={getattr(self, key)!r} is out of range")


MODELS_PACKAGE = "effnet.core.config.models"


def available_models() -> list[str]:
    """Names accepted by `--cfg` without a path."""
    package = importlib.import_module(MODELS_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__))


def _config_from_module(module, origin: str, nvidia_name: str | None = None) -> ModelConfig:
    config = getattr(module, "config", None)
    if not isinstance(config, ModelConfig):
        hint = f"; NVIDIA's model files are bundled: --cfg {nvidia_name}" if nvidia_name else ""
        raise ConfigError(f"--cfg {origin}: the module must define `config = ModelConfig(...)`{hint}")
    return config


def load_model_config(cfg: str) -> ModelConfig:
    """Resolve `--cfg`: a bundled name (b0..b7) or a path to a Python file."""
    cfg = str(cfg).strip()
    looks_like_path = cfg.endswith(".py") or "/" in cfg or "\\" in cfg
    nvidia_name = bundled_model_for(cfg)
    if looks_like_path and nvidia_name and not Path(cfg).is_file():
        return load_model_config(nvidia_name)  # NVIDIA's config/efficientnet_v1/bN_cfg.py is bundled bN
    if looks_like_path:
        path = Path(cfg)
        if not path.is_file():
            raise ConfigError(f"--cfg {cfg}: no such file")
        spec = importlib.util.spec_from_file_location(f"effnet_user_cfg_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"--cfg {cfg}: not a loadable Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except ConfigError:
            raise
        except Exception as err:  # the user's file failed to run: say so in one line
            hint = f"; NVIDIA's model files are bundled: --cfg {nvidia_name}" if nvidia_name else ""
            raise ConfigError(f"--cfg {cfg}: failed to load: {type(err).__name__}: {err}{hint}") from None
        return _config_from_module(module, cfg, nvidia_name)
    name = cfg.lower()
    if name not in available_models():
        raise ConfigError(f"--cfg {cfg}: unknown model; valid names: {', '.join(available_models())} (or a path to a .py file)")
    return _config_from_module(importlib.import_module(f"{MODELS_PACKAGE}.{name}"), cfg)


def overridable_fields() -> dict[str, object]:
    """Scalar fields that `--mparams` may set, with their types."""
    return {k: t for k, t in field_types(ModelConfig).items() if k not in ("blocks",)}


def parse_mparams(text: str) -> dict[str, str]:
    """Split 'a=1,b=2' into {'a': '1', 'b': '2'}; a malformed item is an error."""
    out: dict[str, str] = {}
    text = (text or "").strip()
    if not text:
        return out
    valid = overridable_fields()
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--mparams: {item.strip()!r} is not key=value; valid keys: {', '.join(valid)}")
        if key in out:
            raise ConfigError(f"--mparams: {key} is given twice")
        out[key] = value.strip()
    return out


def apply_mparams(config: ModelConfig, mparams: str | dict | None) -> ModelConfig:
    """Return `config` with `--mparams` overrides applied, each coerced to the field's type."""
    if not mparams:
        return config
    items = parse_mparams(mparams) if isinstance(mparams, str) else dict(mparams)
    valid = overridable_fields()
    changes, given_as = {}, {}
    for given, value in items.items():
        key = read_mparams_key(given)
        if key in changes:
            raise ConfigError(f"--mparams: {key} is given twice, as {given_as[key]} and {given}")
        given_as[key] = given
        if key not in valid:
            listing = ", ".join(f"{k} ({type_name(t)})" for k, t in valid.items())
            raise ConfigError(f"--mparams: unknown key {key!r}; valid keys: {listing}")
        changes[key] = coerce(f"--mparams {key}", value, valid[key])
    return dataclasses.replace(config, **changes)
