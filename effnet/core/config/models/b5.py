"""EfficientNet-B5: width 1.6, depth 2.2, 456 px, head dropout 0.4."""
from effnet.core.config.model import ModelConfig

config = ModelConfig(name="b5", width_coefficient=1.6, depth_coefficient=2.2, resolution=456, dropout_rate=0.4)
