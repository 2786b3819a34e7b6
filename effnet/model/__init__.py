"""EfficientNet v1 in Keras: one builder (`effnet.model.efficientnet`) over the architecture data in `effnet.core.architecture`."""
