"""EfficientNet-B2: width 1.1, depth 1.2, 260 px, head dropout 0.3."""
from effnet.core.config.model import ModelConfig

config = ModelConfig(name="b2", width_coefficient=1.1, depth_coefficient=1.2, resolution=260, dropout_rate=0.3)
