"""The Slurm launcher: cluster profiles, recipes, sbatch rendering, submission and the per-rank task.

Nothing here imports TensorFlow; the trainer (`effnet`) is only imported inside the rank task.
"""
