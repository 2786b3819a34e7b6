"""`python -m effnet`: see `effnet.cli`."""
import os

# Hide TensorFlow's INFO chatter (CPU feature banners); warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from effnet.cli import entrypoint  # noqa: E402

entrypoint()
