"""Command-line tools that sit beside the trainer: data conversion, log collection, local Slurm."""
