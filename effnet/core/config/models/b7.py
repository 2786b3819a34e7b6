"""EfficientNet-B7: width 2.0, depth 3.1, 600 px, head dropout 0.5."""
from effnet.core.config.model import ModelConfig

config = ModelConfig(name="b7", width_coefficient=2.0, depth_coefficient=3.1, resolution=600, dropout_rate=0.5)
