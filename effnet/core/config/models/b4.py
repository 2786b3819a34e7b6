"""EfficientNet-B4: width 1.4, depth 1.8, 380 px, head dropout 0.4."""
from effnet.core.config.model import ModelConfig

config = ModelConfig(name="b4", width_coefficient=1.4, depth_coefficient=1.8, resolution=380, dropout_rate=0.4)
