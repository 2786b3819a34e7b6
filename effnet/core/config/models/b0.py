"""EfficientNet-B0: width 1.0, depth 1.0, 224 px, head dropout 0.2."""
from effnet.core.config.model import ModelConfig

config = ModelConfig(name="b0", width_coefficient=1.0, depth_coefficient=1.0, resolution=224, dropout_rate=0.2)
