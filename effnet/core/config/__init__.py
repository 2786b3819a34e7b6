"""Configuration as data: model configs (`ModelConfig`, one module per variant) and `TrainConfig`.

Everything is validated here, at the edge, so the rest of the code can trust its inputs.
"""

from effnet.core.errors import ConfigError
from effnet.core.config.model import ModelConfig, apply_mparams, available_models, load_model_config
from effnet.core.config.train import TrainConfig

__all__ = ["ConfigError", "ModelConfig", "TrainConfig", "apply_mparams", "available_models", "load_model_config"]
