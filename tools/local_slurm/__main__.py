"""`python -m tools.local_slurm up|down|status|image`: see tools.local_slurm.cluster."""
from .cluster import main

raise SystemExit(main())
