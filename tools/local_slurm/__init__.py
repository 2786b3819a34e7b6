"""A real Slurm 22.05 cluster on this one machine, with Pyxis and enroot when their sources are at hand.

- `cluster`: the daemons, `up`/`down`/`status` (the command line, `python -m tools.local_slurm`);
- `slurm_conf`: the layout (paths, ports) and the Slurm config files, pure functions of it;
- `pyxis`: enroot and pyxis built from the vendored sources, enabled, and a mount namespace per node;
- `image`: the small squashfs image the containers of this cluster run.
"""
