"""EfficientNet v1: block specs as data (`effnet.model.blocks`) and one builder (`effnet.model.efficientnet`)."""
