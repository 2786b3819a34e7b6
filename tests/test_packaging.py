"""What the package relies on: the exact Keras it was checked against, the Keras behaviour the
model and the checkpoint use, and a wheel that names every package and nothing beside them.

A Keras upgrade fails `test_keras_is_the_pinned_version` first: re-run this file and
tests/test_model.py, tests/test_checkpoint_eval.py and tests/test_trainer.py against the new
version, then move the pin in pyproject.toml.
"""
from __future__ import annotations

import inspect
import re
import tomllib

import keras
import numpy as np

from effnet.core.config.model import load_model_config
from effnet.model.efficientnet import build_model
from effnet.train.checkpoint import RngState
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def exact_pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", requirement)
        assert match, f"{requirement!r} is not pinned exactly"
        pins[match.group(1).lower()] = match.group(3)
    return pins


def test_every_dependency_is_pinned_exactly():
    project = PYPROJECT["project"]
    pins = exact_pins(project["dependencies"])
    assert {"keras", "protobuf", "tensorflow-datasets", "tensorflow-metadata"} <= set(pins)
    extras = {name: exact_pins(reqs) for name, reqs in project["optional-dependencies"].items()}
    # TensorFlow, and the numpy its binary is built against, only through an extra (or the container's).
    assert extras["cpu"] == {"tensorflow-cpu": "2.18.1", "numpy": "2.0.2"}
    assert extras["gpu"] == {"tensorflow": "2.18.1", "numpy": "2.0.2"}
    assert not {"tensorflow", "tensorflow-cpu", "numpy"} & set(pins)


def test_the_image_and_make_setup_install_the_same_pins():
    """One list: the Dockerfile installs the project with its dependencies (no --no-deps, which skipped
    the Keras pin) and names no package of its own; `make setup` installs the same project."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = [line for line in re.sub(r"\\\n", " ", dockerfile).splitlines() if "pip install" in line]
    assert len(installs) == 1, installs
    words = installs[0].split()
    assert "--no-deps" not in words and words[words.index("-e") + 1] == "."
    assert not [w for w in words if "==" in w or w.startswith("-r")], words   # no second list of pins
    makefile = (ROOT / "Makefile").read_text()
    assert "$(PIP) install -q -e '.[cpu,test]'" in makefile
    # What the image keeps of its own: TensorFlow, Horovod, numpy; none is among the pins it installs.
    assert not {"tensorflow", "horovod", "numpy"} & set(exact_pins(PYPROJECT["project"]["dependencies"]))


def test_keras_is_the_pinned_version():
    pinned = exact_pins(PYPROJECT["project"]["dependencies"])["keras"]
    assert keras.__version__ == pinned, (
        f"Keras {keras.__version__} is installed but {pinned} is pinned: check CrossReplicaBatchNormalization "
        "and RngState against it (see this module's docstring) before moving the pin")


def test_batch_norm_members_the_cross_replica_layer_uses():
    """CrossReplicaBatchNormalization overrides the public `call` and reads only these members."""
    layer = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    layer.build((None, 4, 4, 3))
    for name in ("moving_mean", "moving_variance", "gamma", "beta", "momentum", "epsilon", "axis", "center",
                 "scale", "renorm", "trainable", "compute_dtype"):
        assert hasattr(layer, name), name
    assert list(inspect.signature(keras.layers.BatchNormalization.call).parameters) == [
        "self", "inputs", "training", "mask"]


def test_rng_state_is_every_seed_generator_of_the_model():
    """The checkpoint saves the dropout RNG through `SeedGenerator.state`; nothing else in the model is an RNG."""
    model = build_model(load_model_config("b0"), 32)
    states = RngState(model).states
    integer = [v.value for v in model.variables if not keras.backend.is_float_dtype(v.dtype)]
    dropouts = sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    assert len(states) == dropouts == len(integer) > 0
    assert {id(s) for s in states} == {id(v) for v in integer}
    before = [s.numpy().copy() for s in states]
    model(np.zeros((2, 32, 32, 3), np.float32), training=True)
    assert all((s.numpy() != b).any() for s, b in zip(states, before))   # these are what dropout draws from


def test_the_wheel_names_every_package_and_no_generic_top_level():
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for top in ("effnet", "jobs") for init in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert {name.split(".")[0] for name in listed} == {"effnet", "jobs", "effnet_slurm"}
    assert setuptools["package-dir"] == {"effnet_slurm.clusters": "clusters"}
    assert setuptools["package-data"] == {"effnet_slurm.clusters": ["*.toml"]}
