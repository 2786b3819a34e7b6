# effnet-slurm on the last NGC TensorFlow image (25.02), which bundles TensorFlow, Horovod
# (MPI + NCCL), OpenMPI with PMIx and CUDA. Pyxis runs it with `srun --container-image`.
#   docker build -t effnet-slurm:latest .   then   enroot/import.sh effnet-slurm:latest
ARG FROM_IMAGE=nvcr.io/nvidia/tensorflow:25.02-tf2-py3
FROM ${FROM_IMAGE}

WORKDIR /workspace/effnet-slurm

COPY pyproject.toml README.md ./
COPY effnet ./effnet
COPY jobs ./jobs
COPY clusters ./clusters
COPY tools ./tools
COPY bench ./bench
COPY sbatch ./sbatch
# The project with its pins from pyproject.toml, the list `make setup` installs (Keras,
# tensorflow-datasets, tensorflow-metadata, protobuf, ...). No extra: the image's TensorFlow, Horovod
# and numpy (the GPU builds) stay. The image's Python may be newer than our 3.11 pin. The build fails
# here if TensorFlow, Horovod or Keras no longer import beside the pins.
RUN python3 -m pip install --no-cache-dir --ignore-requires-python -e . \
    && python3 -c "import tensorflow, keras, horovod.tensorflow, effnet, jobs.task, tensorflow_datasets"

ENV TF_CPP_MIN_LOG_LEVEL=1 \
    TF_GPU_THREAD_MODE=gpu_private \
    PYTHONUNBUFFERED=1
