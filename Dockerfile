# effnet-slurm on the last NGC TensorFlow image (25.02), which bundles TensorFlow, Horovod
# (MPI + NCCL), OpenMPI with PMIx and CUDA. Pyxis runs it with `srun --container-image`.
#   docker build -t effnet-slurm:latest .   then   enroot/import.sh effnet-slurm:latest
ARG FROM_IMAGE=nvcr.io/nvidia/tensorflow:25.02-tf2-py3
FROM ${FROM_IMAGE}

WORKDIR /workspace/effnet-slurm

# The image's TensorFlow and Horovod are the GPU builds: install only what it lacks, pinned.
RUN python3 -m pip install --no-cache-dir \
        submitit==1.5.4 fire==0.7.1 tensorflow-datasets==4.9.10 importlib_resources==7.1.0 \
        tqdm==4.70.1 matplotlib==3.11.2

COPY pyproject.toml README.md ./
COPY effnet ./effnet
COPY jobs ./jobs
COPY clusters ./clusters
COPY tools ./tools
COPY bench ./bench
COPY sbatch ./sbatch
# --no-deps keeps the image's TensorFlow; the image's Python may be newer than our 3.11 pin.
RUN python3 -m pip install --no-cache-dir --no-deps --ignore-requires-python -e . \
    && python3 -c "import horovod.tensorflow, effnet, jobs.task"

ENV TF_CPP_MIN_LOG_LEVEL=1 \
    TF_GPU_THREAD_MODE=gpu_private \
    PYTHONUNBUFFERED=1
