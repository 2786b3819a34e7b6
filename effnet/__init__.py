"""effnet: an EfficientNet v1 trainer that runs on a laptop CPU, one GPU or many Horovod ranks.

It knows nothing about Slurm; `jobs/` launches it.
"""

__version__ = "0.1.0"
