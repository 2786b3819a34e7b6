"""Exit 0 when the installed horovod is the wanted version and has its TensorFlow ops and Gloo,
and MPI as well when `--mpi` is given (Open MPI is installed, so the build must have used it).

`make setup` uses it to skip the five-minute source build when nothing changed.
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    want_mpi = "--mpi" in argv
    args = [a for a in argv[1:] if a != "--mpi"]
    wanted = args[0] if args else "0.28.1"
    try:
        import horovod
        import horovod.tensorflow as hvd
    except ImportError as err:
        print(f"horovod: not importable ({err})", file=sys.stderr)
        return 1
    if horovod.__version__ != wanted:
        print(f"horovod: have {horovod.__version__}, want {wanted}", file=sys.stderr)
        return 1
    if not hvd.gloo_built():
        print("horovod: built without Gloo", file=sys.stderr)
        return 1
    if want_mpi and not hvd.mpi_built():
        print("horovod: built without MPI, and Open MPI is installed now", file=sys.stderr)
        return 1
    print(f"horovod {horovod.__version__}: tensorflow ops ok, gloo={hvd.gloo_built()}, mpi={hvd.mpi_built()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
