"""NVIDIA's command lines run here: each line of docs/nvidia.md (the seed README's and its scripts'),
with tiny data, steps and model, and each NVIDIA flag without a counterpart is one line naming ours."""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from effnet.core.config import nvidia
from effnet.core.config.model import load_model_config
from effnet.core.config.train import TrainConfig
from effnet.core.errors import ConfigError
from tests.conftest import ROOT, run_cli
from tests.runlogs import records

DOC = ROOT / "docs" / "nvidia.md"
SEED_README = ROOT.parent / "shared" / "seed" / "nvidia-efficientnet-tf2-README.txt"

# What makes a line tiny: values replaced where the line gives them, flags added where it does not.
TINY_VALUES = {"--train_img_size": "32", "--eval_img_size": "32", "--predict_img_size": "32",
               "--train_batch_size": "4", "--eval_batch_size": "50", "--predict_batch_size": "50", "--max_epochs": "1"}
TINY_MODEL = "width_coefficient=0.25,depth_coefficient=0.25,num_classes=10"
TINY_FLAGS = {"--steps_per_epoch": "2", "--warmup_epochs": "0", "--max_epochs": "1", "--train_img_size": "32",
              "--eval_img_size": "32", "--train_batch_size": "4", "--eval_batch_size": "50", "--mparams": TINY_MODEL}


def nvidia_lines() -> list[str]:
    """The code block of docs/nvidia.md's 'Their command lines, run here'."""
    section = DOC.read_text().split("## Their command lines, run here", 1)[1]
    block = section.split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def as_ours(line: str, places: dict[str, Path]) -> list[str]:
    """NVIDIA's line as `python -m effnet` arguments, its paths moved into `places` and made tiny."""
    program, script, *args = shlex.split(line)
    assert program in ("python", "python3") and script == "main.py", line
    out: list[str] = []
    given: set[str] = set()
    i = 0
    while i < len(args):
        flag, value = args[i].partition("=")[0], args[i].partition("=")[2]
        takes_value = i + 1 < len(args) and not args[i + 1].startswith("--") and not value
        if takes_value:
            value = args[i + 1]
        given.add(flag)
        if flag == "--mparams":
            value = f"{value},{TINY_MODEL}"
        elif flag in TINY_VALUES:
            value = TINY_VALUES[flag]
        elif flag in ("--data_dir", "--model_dir", "--predict_ckpt", "--predict_img_dir"):
            value = str(places.get(value, places[flag]))
        out += [flag, value] if (takes_value or "=" in args[i]) else [flag]
        i += 2 if takes_value else 1
    ours = {"--" + nvidia.FLAG_ALIASES.get(flag[2:], flag[2:]) for flag in given}
    for flag, value in TINY_FLAGS.items():
        out += [] if flag in ours else [flag, value]
    out += [] if "--data_dir" in given else ["--data_dir", str(places["--data_dir"])]
    return out


def test_the_page_has_every_command_line_of_the_seed_readme():
    if not SEED_README.is_file():
        pytest.skip(f"{SEED_README} is absent (it comes with ../shared/)")
    seed = {m.strip() for m in re.findall(r"python main\.py[^\n)]*", SEED_README.read_text())}
    assert len(seed) == 4 and seed <= set(nvidia_lines()), seed - set(nvidia_lines())


def test_every_flag_the_seed_readme_names_is_a_flag_here():
    """Its main.py flags are ours, or NVIDIA's spellings of ours; the rest are sbatch's and Pyxis' options
    and the .sub script's `datadir` variable, which docs/nvidia.md maps to DATA_DIR."""
    if not SEED_README.is_file():
        pytest.skip(f"{SEED_README} is absent (it comes with ../shared/)")
    named = set(re.findall(r"--([A-Za-z_][A-Za-z0-9_-]*)", SEED_README.read_text()))
    theirs = {"ntasks-per-node", "container-image", "datadir", "help"}
    ours = {f.name for f in dataclasses.fields(TrainConfig)} | set(nvidia.FLAG_ALIASES)
    assert len(named) > 25 and named - theirs <= ours, (named - theirs) - ours


def test_every_nvidia_command_line_runs(mnist, tmp_path):
    """The lines in order: a B0 or B4 line's eval and predict read the checkpoint its training wrote."""
    infer = tmp_path / "infer_data"
    (infer / "images").mkdir(parents=True)  # NVIDIA's layout: the images one folder down
    for name in ("a.JPEG", "b.JPEG"):
        (infer / "images" / name).write_bytes(_validation_jpeg(mnist))
    lines = nvidia_lines()
    assert len(lines) == 12
    for n, line in enumerate(lines):
        model = "b4" if "b4_cfg" in line else "b0"
        places = {"--data_dir": mnist, "--model_dir": tmp_path / f"{model}_output", "--predict_img_dir": infer,
                  "--predict_ckpt": tmp_path / f"{model}_output", "/model/": tmp_path / f"{model}_multinode"}
        args = as_ours(line, places) if "--help" not in line else ["--help"]
        cwd = tmp_path / f"line{n}"  # a line without --model_dir writes to ./runs/effnet
        cwd.mkdir()
        result = run_cli(*args, cwd=cwd)
        assert result.returncode == 0, f"{line}\n{args}\n{result.stderr[-3000:]}"
        if "--help" in line:
            assert "--memory_limit" in result.stdout
            continue
        model_dir = Path(args[args.index("--model_dir") + 1]) if "--model_dir" in args else \
            (Path(args[args.index("--predict_ckpt") + 1]) if "--predict_ckpt" in args else cwd / "runs/effnet")
        params = [r["data"] for r in records(model_dir) if r.get("step") == "PARAMETER" and "model" in r["data"]][-1]
        assert params["model"]["name"] == model
        if "dropout=0.5" in line:
            assert params["model"]["dropout_rate"] == 0.5 and params["model"]["bn_momentum"] == 0.9
        if "--memory_limit" in line:
            assert params["memory_limit"] == 81000
        if "--mode predict" in line:
            rows = json.loads((model_dir / "predictions.json").read_text())
            assert [Path(r["file"]).name for r in rows] == ["a.JPEG", "b.JPEG"]
            assert all(len(r["top_k"]) == 5 for r in rows)
            assert params["eval_img_size"] == 32 and params["predict_path"] == str(infer)
        if "--mode eval" in line:
            evals = [r["data"] for r in records(model_dir) if "eval_accuracy_top_1" in r.get("data", {})]
            assert evals[-1]["checkpoint"] != "random weights"


def _validation_jpeg(mnist: Path) -> bytes:
    import tensorflow as tf

    record = next(iter(tf.data.TFRecordDataset(sorted(str(p) for p in mnist.glob("validation-*")))))
    parsed = tf.io.parse_single_example(record, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
    return parsed["image/encoded"].numpy()


@pytest.mark.parametrize("flags,ours", [
    ({"mode": "prediction"}, {"mode": "predict"}),
    ({"mode": "evaluate"}, {"mode": "eval"}),
    ({"lr_warmup_epochs": 3}, {"warmup_epochs": 3}),
    ({"decay": 0.8}, {"rmsprop_rho": 0.8}),
    ({"predict_img_dir": "/infer_data", "predict_ckpt": "/model", "predict_batch_size": 50, "predict_img_size": 380},
     {"predict_path": "/infer_data", "model_dir": "/model", "eval_batch_size": 50, "eval_img_size": 380}),
    ({"export_SavedModel": True, "enable_tensorboard": False}, {"export_savedmodel": True, "tensorboard": False}),
    ({"memory_limit": "81000"}, {"memory_limit": 81000}),
])
def test_nvidias_spellings_are_read_as_ours(flags, ours):
    config = TrainConfig.from_flags(**flags)
    assert {k: getattr(config, k) for k in ours} == ours


def test_each_nvidia_flag_without_a_counterpart_names_what_to_use():
    for flag, hint in nvidia.FLAG_HINTS.items():
        with pytest.raises(ConfigError) as err:
            TrainConfig.from_flags(**{flag: "1"})
        assert str(err.value) == f"--{flag} is NVIDIA's flag: {hint}"
    for mode, hint in nvidia.MODE_HINTS.items():
        with pytest.raises(ConfigError, match=f"--mode {mode} is NVIDIA's mode: "):
            TrainConfig.from_flags(mode=mode)
    with pytest.raises(ConfigError, match="--warmup_epochs is given twice, as --lr_warmup_epochs and --warmup_epochs"):
        TrainConfig.from_flags(lr_warmup_epochs=1, warmup_epochs=2)
    with pytest.raises(ConfigError, match="--memory_limit must be >= 1, got 0"):
        TrainConfig.from_flags(memory_limit=0)


def test_nvidias_model_files_and_keys(tmp_path):
    from effnet.core.config.model import apply_mparams

    assert load_model_config("config/efficientnet_v1/b4_cfg.py") == load_model_config("b4")
    assert load_model_config("/workspace/config/efficientnet_v1/b0_cfg.py") == load_model_config("b0")
    with pytest.raises(ConfigError, match="EfficientNet v2 is not offered here; v1 is: --cfg b0 .. b7"):
        load_model_config("config/efficientnet_v2/s_cfg.py")
    # NVIDIA's own file, where it exists, is not a ModelConfig: the error names the bundled model.
    theirs = tmp_path / "config" / "efficientnet_v1" / "b0_cfg.py"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("config = dict(width_coefficient=1.0, depth_coefficient=1.0, dropout_rate=0.2)\n")
    with pytest.raises(ConfigError, match=r"must define `config = ModelConfig\(...\)`; NVIDIA's model files are "
                                          r"bundled: --cfg b0"):
        load_model_config(str(theirs))
    b0 = load_model_config("b0")
    assert apply_mparams(b0, "dropout=0.5,stem_base_filters=24,top_base_filters=1024") == \
        apply_mparams(b0, "dropout_rate=0.5,stem_filters=24,top_filters=1024")
    with pytest.raises(ConfigError, match="dropout_rate is given twice, as dropout and dropout_rate"):
        apply_mparams(b0, "dropout=0.5,dropout_rate=0.3")
    with pytest.raises(ConfigError, match=r"--mparams batch_norm is a key of NVIDIA's model files: use "
                                          r"sync_batch_norm=true\|false"):
        apply_mparams(b0, "batch_norm=syncbn")


def test_memory_limit_caps_the_ranks_gpu_and_growth_is_the_default():
    import tensorflow as tf

    from effnet import dist

    gpus = [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(8)]
    capped = dist.gpu_setting(gpus, 11, 81000)
    assert capped.gpu.name == "/physical_device:GPU:3"
    assert [c.memory_limit for c in capped.memory] == [81000]
    assert dist.gpu_setting(gpus, 0, None).memory is None  # set_memory_growth
    assert dist.gpu_setting([], 0, 81000) is None  # a CPU machine: nothing to configure
