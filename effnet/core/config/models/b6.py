"""EfficientNet-B6: width 1.8, depth 2.6, 528 px, head dropout 0.5."""
from effnet.core.config.model import ModelConfig

config = ModelConfig(name="b6", width_coefficient=1.8, depth_coefficient=2.6, resolution=528, dropout_rate=0.5)
