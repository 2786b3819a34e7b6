"""`python -m effnet`: see `effnet.cli`."""
from effnet.cli import entrypoint

entrypoint()
