"""Bundled model configs, one thin module per EfficientNet v1 variant (`--cfg b0` .. `--cfg b7`)."""
