"""Exit 0 when the installed horovod is the wanted version and has its TensorFlow ops and Gloo.

`make setup` uses it to skip the five-minute source build when nothing changed.
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    wanted = argv[1] if len(argv) > 1 else "0.28.1"
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
    print(f"horovod {horovod.__version__}: tensorflow ops ok, gloo={hvd.gloo_built()}, mpi={hvd.mpi_built()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
