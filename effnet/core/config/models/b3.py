"""EfficientNet-B3: width 1.2, depth 1.4, 300 px, head dropout 0.3."""
from effnet.core.config.model import ModelConfig

config = ModelConfig(name="b3", width_coefficient=1.2, depth_coefficient=1.4, resolution=300, dropout_rate=0.3)
