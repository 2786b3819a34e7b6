"""`python3 DIR` runs this package from any copy of it: its parent goes first on the path, so its
modules import each other as one package under the directory's own name."""
import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[0] = os.path.dirname(HERE)
sys.exit(importlib.import_module(os.path.basename(HERE) + ".attempt").main())
