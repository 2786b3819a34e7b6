#!/usr/bin/env bash
# Turn the effnet-slurm image into the squashfs file a cluster profile's container_image names.
#   enroot/import.sh [IMAGE] [OUTPUT]
#   IMAGE: a local Docker image (default effnet-slurm:latest), or a registry image written as
#          docker://[USER@]REGISTRY#REPO:TAG (note the '#' between registry and repository).
#   OUTPUT: the .sqsh file (default effnet-slurm.sqsh); put it on a filesystem every node sees.
set -euo pipefail

image="${1:-effnet-slurm:latest}"
output="${2:-effnet-slurm.sqsh}"

if ! command -v enroot >/dev/null 2>&1; then
  echo "import.sh: enroot is not installed on this machine (run this on a login or compute node)" >&2
  exit 1
fi

case "$image" in
  docker://*) uri="$image" ;;
  *) uri="dockerd://$image" ;;  # from the local Docker daemon
esac

enroot import --output "$output" "$uri"
echo "wrote $output"
echo "set container_image = \"$(realpath "$output")\" in your cluster profile (clusters/*.toml)"
