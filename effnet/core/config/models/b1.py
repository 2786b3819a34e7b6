"""EfficientNet-B1: width 1.0, depth 1.1, 240 px, head dropout 0.2."""
from effnet.core.config.model import ModelConfig

config = ModelConfig(name="b1", width_coefficient=1.0, depth_coefficient=1.1, resolution=240, dropout_rate=0.2)
