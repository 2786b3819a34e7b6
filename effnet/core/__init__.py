"""The TensorFlow-free core that the trainer (`effnet`) and the launcher (`jobs`) share.

Importing anything here loads neither TensorFlow, Keras nor Horovod, so the launcher, the status
tools and the batch script's helpers start in milliseconds on a login node. It holds what both
sides must agree on: the configuration dataclasses and their parsing, exit codes and signal
names, the stage schedule and learning-rate rule, the run log (writer and reader) and the paths
of an experiment.
"""
