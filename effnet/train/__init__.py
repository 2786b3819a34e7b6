"""Training: the step, learning-rate schedule, optimizer, precision and metrics."""
