"""The launcher without a cluster: profiles, recipes, rendering (golden files), bad input, linters."""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
from submitit.core.utils import JobPaths

from effnet.core.errors import ConfigError
from effnet.core.paths import ExperimentPaths
from jobs import subfiles
from jobs.launcher import make_executor, prepare, submit
from jobs.profile import ClusterProfile, available_clusters, from_mapping, load_profile, valid_fields
from jobs.recipes import RECIPES, get_recipe, resolve
from jobs.render import JobSpec, render_sbatch
from jobs.task import RankLayout, horovod_gloo_env, host_assignments, rendezvous_port

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
BIN = Path(sys.executable).parent

# The Pyxis options (pyxis args.c at v0.24.0; peers.md §6).
PYXIS_FLAGS = {
    "container-image", "container-mounts", "container-workdir", "container-name", "container-save",
    "container-mount-home", "no-container-mount-home", "container-remap-root", "no-container-remap-root",
    "container-entrypoint", "no-container-entrypoint", "container-entrypoint-log", "container-writable",
    "container-readonly", "container-env", "container-unshare",
}


def submit_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.submit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# ------------------------------------------------------------------ profiles


def test_shipped_profiles_load():
    assert {"local", "localslurm", "dgxa100", "dgx1v100"} <= set(available_clusters())
    a100, v100 = load_profile("dgxa100"), load_profile("dgx1v100")
    assert (a100.gpu_type, a100.gpus_per_node, a100.tasks_per_node, a100.launch) == ("a100", 8, 8, "pmix")
    assert (v100.gpu_type, v100.gpus_per_node) == ("v100", 8)
    assert a100.container_image and a100.container_mounts and a100.cpu_bind and "NCCL_IB_HCA" in a100.env
    local = load_profile("local")
    assert (local.executor, local.gpu_type, local.tasks_per_node) == ("local", "cpu", 2)


def test_unknown_profile_field_lists_valid_fields(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text('name = "mine"\npartitions = "debug"\n')
    line = one_line_error(submit_cli("--cluster", str(bad), "smoke", "--dry-run"))
    assert "unknown field(s) partitions" in line
    for name in valid_fields():
        assert name in line


@pytest.mark.parametrize("body, message", [
    ('tasks_per_node = "8"', "tasks_per_node: expected int"),
    ("exclusive = 1", "exclusive: expected true or false"),
    ('launch = "ssh"', "launch: 'ssh' is not one of gloo, pmix"),
    ('gpu_type = "h100"', "gpu_type: 'h100' is not one of a100, v100, cpu"),
    ("container_mounts = \"/a:/b\"", "container_mounts: expected a list"),
    ('partition = "debug; touch /tmp/x"', "partition 'debug; touch /tmp/x' contains shell metacharacters"),
    ('account = "$(id)"', "account '$(id)' contains shell metacharacters"),
    ('container_mounts = ["/data:/data`id`"]', "contains shell metacharacters"),
    ('[env]\n"BAD NAME" = "1"', "'BAD NAME' is not a valid environment variable name"),
    ("stall_timeout_s = -1", "stall_timeout_s must be >= 0, got -1"),
    ("stall_timeout_s = 600\nfirst_step_grace_s = 300", "first_step_grace_s (300) must be at least stall_timeout_s"),
    ('checkpoint_every_min = "30"', "checkpoint_every_min: expected a number, got '30'"),
    ("max_fault_requeues = true", "max_fault_requeues: expected int"),
    ("container_writable = true", "container_writable is set but container_image is not"),
    ('container_writable = "yes"', "container_writable: expected true or false"),
    # A site's mistakes that would cost a job: each is one line naming the field.
    ('[env]\nNCCL_SOCKET_IFNAME = 5', 'env: NCCL_SOCKET_IFNAME = 5 is not a string; quote it: NCCL_SOCKET_IFNAME = "5"'),
    ("signal_delay_s = 30000", "time_limit_min = 60: the checkpoint signal (USR2, signal_delay_s = 30000) would "
                               "leave less than half of a 60-minute job to train; give at least 1000 minutes"),
    ('experiments_dir = "experiments"', "experiments_dir 'experiments' is relative: give an absolute path that "
                                        "every node shares, or leave it empty for runs/experiments in this checkout"),
])
def test_bad_profile_values_are_one_line_errors(tmp_path, body, message):
    profile = tmp_path / "mine.toml"
    profile.write_text(f'name = "mine"\n{body}\n')
    line = one_line_error(submit_cli("--cluster", str(profile), "smoke", "--dry-run"))
    assert message in line
    assert "mine.toml" in line


def test_a_time_limit_that_the_checkpoint_signal_would_fill_is_refused():
    """dgxa100 sends USR2 300 s before the limit: --time 3 would checkpoint and requeue at once, every attempt."""
    line = one_line_error(submit_cli("--cluster", "dgxa100", "--nodes", "4", "b4_amp", "--time", "3", "--dry-run"))
    assert line == ("jobs.submit: error: --time 3: the checkpoint signal (USR2, signal_delay_s = 300) would leave "
                    "less than half of a 3-minute job to train; give at least 10 minutes or a smaller signal_delay_s")
    proc = submit_cli("--cluster", "dgxa100", "--nodes", "4", "b4_amp", "--time", "10", "--dry-run")
    assert proc.returncode == 0 and "#SBATCH --time=10\n" in proc.stdout and "#SBATCH --signal=USR2@300" in proc.stdout


def test_metacharacter_profile_value_never_runs(tmp_path):
    """Rejected at the edge; and a JobSpec built around validation renders it quoted, inert."""
    marker = tmp_path / "pwned"
    profile = tmp_path / "evil.toml"
    profile.write_text(f'name = "evil"\npartition = "debug; touch {marker}"\n')
    assert "shell metacharacters" in one_line_error(submit_cli("--cluster", str(profile), "smoke"))
    spec = _spec(partition=f"debug; touch {marker}", env={"NOTE": f"$(touch {marker}); `touch {marker}`"})
    text = render_sbatch(spec, ["true"])
    assert f"#SBATCH --partition='debug; touch {marker}'" in text
    assert f"export NOTE='$(touch {marker}); `touch {marker}`'" in text
    # Run the environment part of the script for real: the value is data, not code.
    env_part = "\n".join(line for line in text.splitlines() if line.startswith("export ")) + '\nprintf %s "$NOTE"'
    out = subprocess.run(["bash", "-c", env_part], capture_output=True, text=True, check=True)
    assert out.stdout == f"$(touch {marker}); `touch {marker}`"
    assert not marker.exists()


def test_unknown_cluster_and_recipe_and_too_many_nodes():
    assert "unknown cluster 'nope'" in one_line_error(submit_cli("--cluster", "nope", "smoke", "--dry-run"))
    line = one_line_error(submit_cli("--cluster", "dgxa100", "b9_amp", "--dry-run"))
    assert "unknown recipe 'b9_amp'" in line and "b4_amp" in line
    line = one_line_error(submit_cli("--cluster", "dgxa100", "--nodes", "65", "b4_amp", "--dry-run"))
    assert "--nodes 65" in line and "1 to 64" in line
    line = one_line_error(submit_cli("--cluster", "localslurm", "--nodes", "2", "smoke", "--set", "max_epoch=3"))
    assert "unknown flag(s) --max_epoch" in line
    line = one_line_error(submit_cli("--cluster", "localslurm", "smoke", "--set", "model_dir=/tmp/x"))
    assert "set by the launcher" in line
    assert "expected key=value" in one_line_error(submit_cli("--cluster", "local", "smoke", "--set", "noequals"))
    line = one_line_error(submit_cli("--cluster", "dgx1v100", "b0_tf32", "--dry-run"))
    assert "no batch size for v100" in line


# ------------------------------------------------------------------ recipes


@pytest.mark.parametrize("recipe, a100_amp, a100_tf32, v100_amp, v100_fp32", [
    ("b0", 1024, 512, 512, 256), ("b4", 160, 80, 64, 32)])
def test_per_gpu_batch_follows_the_reference_table(recipe, a100_amp, a100_tf32, v100_amp, v100_fp32):
    a100, v100 = load_profile("dgxa100"), load_profile("dgx1v100")

    def batch(name, profile):
        return resolve(get_recipe(name), profile, 1).trainer_flags["train_batch_size"]

    assert batch(f"{recipe}_amp", a100) == a100_amp
    assert batch(f"{recipe}_tf32", a100) == a100_tf32
    assert batch(f"{recipe}_amp", v100) == v100_amp
    assert batch(f"{recipe}_fp32", v100) == v100_fp32


def test_global_batch_and_lr_scale_with_nodes():
    a100 = load_profile("dgxa100")
    one, four = (resolve(get_recipe("b4_amp"), a100, n) for n in (1, 4))
    assert (one.global_batch, four.global_batch) == (1280, 5120)
    assert four.peak_lr == pytest.approx(4 * one.peak_lr) == pytest.approx(0.005 * 5120 / 128)
    flags = four.trainer_flags
    assert flags["use_amp"] is True and flags["mixup_alpha"] == 0.2 and flags["train_img_size"] == 380
    fp32 = resolve(get_recipe("b0_fp32"), a100, 1).trainer_flags
    assert fp32["use_amp"] is False and fp32["use_tf32"] is False


def test_every_recipe_resolves_somewhere():
    profiles = [load_profile(c) for c in ("dgxa100", "dgx1v100", "localslurm")]
    for recipe in RECIPES.values():
        ok = [p for p in profiles if p.gpu_type in recipe.batch_per_gpu]
        assert ok, recipe.name
        for profile in ok:
            resolve(recipe, profile, 1)


def test_the_demo_trains_the_convergence_recipe_on_mnist_at_its_global_batch():
    from bench.convergence import BATCHES
    from jobs.recipes import MNIST_FLAGS

    demo = resolve(get_recipe("demo"), load_profile("local"), 1, data_dir="runs/demo-data/")
    assert demo.trainer_flags["data_dir"] == "runs/demo-data/mnist"
    assert demo.global_batch == BATCHES["train_batch_size"] and demo.ranks == 2
    assert {k: demo.trainer_flags[k] for k in MNIST_FLAGS if k != "max_epochs"} == {
        k: v for k, v in MNIST_FLAGS.items() if k != "max_epochs"}
    smoke = resolve(get_recipe("smoke"), load_profile("local"), 1, data_dir="runs/demo-data")
    assert smoke.trainer_flags["data_dir"] == "runs/demo-data/photos"
    assert resolve(get_recipe("b0_amp"), load_profile("dgxa100"), 1, data_dir="/data").trainer_flags["data_dir"] == "/data"


def test_set_reads_nvidias_names_as_the_flags_they_override():
    dgx = load_profile("dgxa100")
    flags = resolve(get_recipe("b0_amp"), dgx, 1, {"lr_warmup_epochs": "2", "decay": "0.8"}).trainer_flags
    assert (flags["warmup_epochs"], flags["rmsprop_rho"]) == (2, 0.8) and "lr_warmup_epochs" not in flags
    with pytest.raises(ConfigError, match="--set: --num_classes is NVIDIA's flag: the class count is a model field"):
        resolve(get_recipe("b0_amp"), dgx, 1, {"num_classes": "10"})


def test_show_prints_the_resolved_recipe():
    proc = submit_cli("--cluster", "dgxa100", "--nodes", "2", "b4_amp_stages", "--show")
    assert proc.returncode == 0, proc.stderr
    assert "global batch 2560, peak lr 0.1" in proc.stdout
    assert "1: epochs 0-124 at 256 px, mixup 0," in proc.stdout
    assert "4: epochs 375-499 at 380 px, mixup 0.2," in proc.stdout
    assert "--train_batch_size=160" in proc.stdout


# ------------------------------------------------------------------ rendering


def _spec(**profile_fields) -> JobSpec:
    """A job around a profile built without validation (`ClusterProfile(...)`, not `from_mapping`)."""
    fields = {"tasks_per_node": 2, "time_limit_min": 10, "signal_delay_s": 60, "partition": "debug", **profile_fields}
    profile = ClusterProfile(name="t", **fields)
    return JobSpec(profile, "t", model_dir="/experiments/t/model", host_side="/experiments/t/host",
                   experiments_dir="/experiments", nodes=2)


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text, f"{name} changed; rerun with UPDATE_GOLDEN=1 if intended"


GOLDEN_JOBS = [("dgxa100", 4, "b4_amp"), ("dgx1v100", 2, "b0_amp_stages")]


@pytest.mark.parametrize("cluster, nodes, recipe", GOLDEN_JOBS)
def test_dry_run_matches_golden(cluster, nodes, recipe):
    proc = submit_cli("--cluster", cluster, "--nodes", str(nodes), recipe, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    _check_golden(f"{cluster}_{recipe}_{nodes}n.sbatch", proc.stdout)


def _fake_slurm(tmp_path: Path, monkeypatch) -> None:
    """`srun` (submitit looks for it on PATH) and an `sbatch` that accepts any script as job 4242."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", "echo 'Submitted batch job 4242'")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("cluster, nodes, recipe", GOLDEN_JOBS)
def test_submitit_hands_sbatch_the_golden_script(tmp_path, monkeypatch, cluster, nodes, recipe):
    """Through submitit's own submit(): the script it gives sbatch is the golden one, rendered from the
    command submitit passes; task count and log names are submitit's. Fails when a submitit upgrade
    changes that command, stops calling our hook or renames the logs."""
    _fake_slurm(tmp_path, monkeypatch)
    profile = load_profile(cluster)
    real_root = Path(profile.experiments_dir)
    profile = dataclasses.replace(profile, experiments_dir=str(tmp_path / "experiments"))
    prepared = prepare(profile, get_recipe(recipe), nodes)
    job = submit(prepared)
    assert job.job_id == "4242" and job.num_tasks == nodes * profile.tasks_per_node
    text = job.paths.submission_file.read_text()
    assert text == prepared.sbatch_text()
    assert text.replace(str(tmp_path / "experiments"), str(real_root)) == (
        GOLDEN / f"{cluster}_{recipe}_{nodes}n.sbatch").read_text()
    # The host side the script runs is the job's own copy, made at submit.
    assert (prepared.paths.host_side / "attempt.py").read_text() == (ROOT / "jobs" / "host" / "attempt.py").read_text()
    last = job.task(job.num_tasks - 1)
    assert (last.paths.stdout, last.paths.stderr) == (
        prepared.paths.task_log("4242", job.num_tasks - 1), prepared.paths.task_log("4242", job.num_tasks - 1, "err"))


def test_submitits_own_script_runs_our_command_and_logs(tmp_path, monkeypatch):
    """A plain SlurmExecutor (submitit's template) runs the command our dry run prints and logs where we
    do; and our hook renders whatever command submitit gives it."""
    _fake_slurm(tmp_path, monkeypatch)
    profile = dataclasses.replace(load_profile("dgxa100"), experiments_dir=str(tmp_path / "experiments"))
    prepared = prepare(profile, get_recipe("b4_amp"), 4)
    plain = submitit.SlurmExecutor(folder=prepared.paths.submitit_dir, python=shlex.quote(prepared.python))
    lines = plain.submit(int).paths.submission_file.read_text().splitlines()
    assert f"#SBATCH --output={prepared.paths.batch_log_pattern('out')}" in lines
    assert f"#SBATCH --error={prepared.paths.batch_log_pattern('err')}" in lines
    srun = shlex.split(next(line for line in lines if line.startswith("srun ")))
    assert srun[-len(prepared.command):] == prepared.command
    assert prepared.paths.task_log_pattern("out") == srun[srun.index("--output") + 1]
    assert prepared.paths.task_log_pattern("err") == srun[srun.index("--error") + 1]
    fake = ["fake-python", "-m", "fake.module", "/a b"]
    assert make_executor(prepared)._make_submission_file_text(shlex.join(fake), "uid") == render_sbatch(
        prepared.spec, fake)


def test_log_names_are_submitits(tmp_path):
    paths = ExperimentPaths.create(tmp_path, "x")
    assert paths.task_log("77", 3) == JobPaths(paths.submitit_dir, "77", 3).stdout
    assert paths.task_log("77", 3, "err") == JobPaths(paths.submitit_dir, "77", 3).stderr
    assert paths.task_log_pattern("err") == str(JobPaths(paths.submitit_dir).stderr)
    assert paths.batch_log_pattern("out") == str(JobPaths(paths.submitit_dir, "%j", 0).stdout)


def test_local_executor_gets_the_job_env_and_leaves_ours_alone(tmp_path):
    """The local profile's env reaches the ranks through submitit's `setup`, quoted, not os.environ."""
    before = dict(os.environ)
    profile = load_profile("local")
    note = "$(touch pwned); `id` 'q'"
    profile = dataclasses.replace(profile, experiments_dir=str(tmp_path), env={**profile.env, "EFFNET_NOTE": note})
    executor = make_executor(prepare(profile, get_recipe("smoke"), 1))
    assert dict(os.environ) == before
    setup = executor.parameters["setup"]
    out = subprocess.run(["sh", "-c", " && ".join([*setup, 'printf %s "$EFFNET_NOTE"'])], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout == note and not (tmp_path / "pwned").exists()
    assert "export HOROVOD_GLOO_IFACE=lo" in setup


def test_dry_run_shows_stages_requeue_and_pyxis_on_srun():
    text = submit_cli("--cluster", "dgx1v100", "--nodes", "2", "b0_amp_stages", "--dry-run").stdout
    assert "# stage 1: epochs 0-124 at 128 px" in text and "# stage 4: epochs 375-499 at 224 px" in text
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --signal=USR2@300", "#SBATCH --requeue", "#SBATCH --open-mode=append"):
        assert line in text.splitlines()
    srun = text[text.index("\nsrun "):text.index("status=$?")]
    for flag in ("--container-image=", "--container-mounts=", "--container-workdir=", "--container-writable",
                 "--no-container-mount-home", "--mpi=pmix"):
        assert flag in srun
    assert 'exec "${attempt[@]}" end "$status"' in text.split("status=$?")[1]
    assert "'--requeue=preempted,time_limit=50' '--fault-requeue=rank_crash,hang,node_failure=3'" in text


def _pyxis_words(text: str) -> list[str]:
    return re.findall(r"--((?:no-)?container-[a-z-]+)", text)


@pytest.mark.parametrize("text_source", ["dryrun", "subfiles"])
def test_pyxis_flags_are_documented_and_only_on_srun(text_source):
    if text_source == "dryrun":
        texts = [submit_cli("--cluster", c, "b0_amp", "--dry-run").stdout for c in ("dgxa100", "dgx1v100")]
    else:
        texts = [p.read_text() for p in sorted((ROOT / "sbatch").glob("*.sub"))]
    for text in texts:
        words = _pyxis_words(text)
        assert {"container-image", "container-mounts", "container-workdir", "container-writable",
                "no-container-mount-home"} <= set(words)
        assert set(words) <= PYXIS_FLAGS
        assert not [line for line in text.splitlines() if line.startswith("#SBATCH") and "container" in line]


def test_sbatch_files_are_in_sync_with_profiles_and_recipes(tmp_path, monkeypatch):
    assert subfiles.main(["--check"]) == 0
    copy = tmp_path / "sbatch"
    shutil.copytree(ROOT / "sbatch", copy)
    stale = copy / "run_B4_multinode.sub"
    stale.write_text(stale.read_text().replace("--train_batch_size=160", "--train_batch_size=128"))
    monkeypatch.setattr(subfiles, "SBATCH_DIR", copy)
    assert subfiles.main(["--check"]) == 1


def test_sub_files_take_nodes_from_sbatch_N():
    text = (ROOT / "sbatch" / "run_B4_multinode.sub").read_text()
    assert "sbatch -N 4 sbatch/run_B4_multinode.sub" in text
    assert "#SBATCH --nodes" not in text
    assert '--model_dir="${EXPERIMENTS_DIR}"/b4_amp-dgxa100-"${SLURM_JOB_NUM_NODES}"n/model' in text
    assert "python3 -u -m jobs.task --launch=pmix --" in text


@pytest.mark.parametrize("path", sorted((ROOT / "sbatch").glob("*.sub")), ids=lambda p: p.name)
def test_a_sub_fits_a_person_and_shows_what_a_site_changes_in_its_first_screen(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= 120
    first_screen = "\n".join(lines[:40])
    for setting in ("#SBATCH --partition=", "CONTAINER_IMAGE=${CONTAINER_IMAGE:-", "DATA_DIR=${DATA_DIR:-",
                    "EXPERIMENTS_DIR=${EXPERIMENTS_DIR:-"):
        assert setting in first_screen, setting
    srun = "\n".join(lines)[path.read_text().index("\nsrun "):]
    assert '--container-image="${CONTAINER_IMAGE}"' in srun and '"${DATA_DIR}":/data:ro' in srun
    assert "--label" in srun  # 32 ranks share the batch output: each line says whose it is


def _site_part(text: str) -> str:
    """The script from `set -u` to its first export: the site settings and the partition check."""
    return text[text.index("set -u"):text.index("\nexport ")]


@pytest.mark.parametrize("environ, expected", [
    ({}, "/lustre/containers/effnet-slurm.sqsh /lustre/datasets/imagenet/tfrecords /lustre/experiments/effnet"),
    ({"CONTAINER_IMAGE": "nvcr.io#nvidia/x:1", "DATA_DIR": "/data sets/in", "EXPERIMENTS_DIR": "/scratch/me"},
     "nvcr.io#nvidia/x:1 /data sets/in /scratch/me"),
])
def test_a_sub_takes_the_sites_settings_from_the_environment(environ, expected):
    part = _site_part((ROOT / "sbatch" / "run_B4_multinode.sub").read_text())
    script = part + '\necho "$CONTAINER_IMAGE $DATA_DIR $EXPERIMENTS_DIR"'
    out = subprocess.run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin", "SLURM_JOB_PARTITION": "batch",
                                                      **environ}, capture_output=True, text=True)
    assert (out.returncode, out.stdout.strip()) == (0, expected), out.stderr


def test_nvidias_partition_variable_is_never_silently_ignored_nor_a_relative_path():
    part = _site_part((ROOT / "sbatch" / "run_B4_multinode.sub").read_text())
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_PARTITION": "batch"}
    same = subprocess.run(["bash", "-c", part], env={**env, "PARTITION": "batch"}, capture_output=True, text=True)
    assert same.returncode == 0, same.stderr
    other = subprocess.run(["bash", "-c", part], env={**env, "PARTITION": "dgx"}, capture_output=True, text=True)
    assert other.returncode == 2 and other.stderr.strip() == (
        "effnet-slurm: PARTITION=dgx, but this job runs in batch: submit with sbatch -p dgx")
    relative = subprocess.run(["bash", "-c", part], env={**env, "DATA_DIR": "imagenet"}, capture_output=True,
                              text=True)
    assert relative.returncode == 2 and relative.stderr.strip() == (
        "effnet-slurm: DATA_DIR=imagenet: not an absolute path")


def test_a_site_renders_sub_files_from_its_own_profile(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text((ROOT / "clusters" / "dgxa100.toml").read_text().replace('name = "dgxa100"', 'name = "mine"')
                    .replace('partition = "batch"', 'partition = "gpu"')
                    .replace("/lustre/datasets/imagenet/tfrecords", "/gpfs/imagenet"))
    out = subprocess.run([sys.executable, "-m", "jobs.subfiles", "--cluster", str(mine), "--recipe", "b0_amp",
                          "--set", "max_epochs=10"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --partition=gpu" in out.stdout and "DATA_DIR=${DATA_DIR:-/gpfs/imagenet}" in out.stdout
    assert "--max_epochs=10" in out.stdout and "recipe b0_amp on cluster mine" in out.stdout
    for args, message in ((["--cluster", str(mine)], "--cluster and --recipe go together"),
                          (["--cluster", str(mine), "--recipe", "b9"], "unknown recipe 'b9'"),
                          (["--cluster", str(tmp_path / "none.toml"), "--recipe", "b0_amp"], "none.toml")):
        bad = subprocess.run([sys.executable, "-m", "jobs.subfiles", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
        assert message in one_line_error(bad)


def test_the_dry_run_shows_what_each_rank_runs():
    text = submit_cli("--cluster", "dgxa100", "--nodes", "4", "b4_amp", "--dry-run", "--set", "max_epochs=7").stdout
    header = text[:text.index("#SBATCH")]
    assert "# each rank runs (through submitit) the equivalent of:\n#   python3 -u -m jobs.task --launch=pmix --" in header
    for flag in ("--cfg=b4", "--max_epochs=7", "--train_batch_size=160", "--use_amp=True",
                 "--model_dir=/lustre/experiments/effnet/b4_amp-dgxa100-4n/model"):
        assert flag in header, flag


def test_shell_scripts_pass_shellcheck(tmp_path):
    rendered = tmp_path / "localslurm.sbatch"
    rendered.write_text(submit_cli("--cluster", "localslurm", "--nodes", "2", "smoke", "--dry-run").stdout)
    scripts = [rendered, *sorted((ROOT / "sbatch").glob("*.sub")), *sorted((ROOT / "enroot").glob("*.sh"))]
    for script in scripts:
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, f"{script}: {syntax.stderr}"
    out = subprocess.run([str(BIN / "shellcheck"), "--shell=bash", *map(str, scripts)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_dockerfile_passes_hadolint():
    out = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "nvcr.io/nvidia/tensorflow:25.02-tf2-py3" in text


# ------------------------------------------------------------------ the rank task


AUTOGRAPH_RANK = """
import sys
import tensorflow as tf
from jobs.task import exit_now

@tf.function
def step(x):
    if x > 0:  # Python control flow: autograph writes a module for it
        return x
    return -x

step(tf.constant(1.0))
print(" ".join(m.__file__ for n, m in list(sys.modules.items()) if n.startswith("__autograph_generated_file")))
exit_now(75)
"""


def test_a_rank_that_exits_at_once_leaves_no_autograph_files(tmp_path):
    """TensorFlow removes its autograph modules at interpreter exit, which a rank's os._exit skips:
    exit_now removes the ones this process wrote (607 piled up in /tmp after a make test without it)."""
    rank, temp = tmp_path / "rank.py", tmp_path / "tmp"
    rank.write_text(AUTOGRAPH_RANK)  # a file: autograph reads the function's source
    temp.mkdir()
    proc = subprocess.run([sys.executable, str(rank)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(temp), "TF_CPP_MIN_LOG_LEVEL": "2",
                               "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 75, proc.stderr[-2000:]
    written = proc.stdout.split()
    assert written and all(Path(f).parent == temp for f in written), proc.stdout
    assert not list(temp.iterdir())


def test_rendezvous_port_is_per_job_and_attempt():
    port = rendezvous_port("1234", 0)
    assert port == rendezvous_port("1234", 0)
    assert port != rendezvous_port("1234", 1) and port != rendezvous_port("1235", 0)
    assert all(20000 <= rendezvous_port(str(j), r) < 50000 for j in range(50) for r in range(3))


def test_horovod_env_for_two_nodes_of_two():
    layouts = [RankLayout(rank=r, size=4, local_rank=r % 2, local_size=2, node=r // 2, num_nodes=2,
                          hostnames=("node1", "node2"), job_id="77", restart=1) for r in range(4)]
    envs = [horovod_gloo_env(layout, {}) for layout in layouts]
    assert [e["HOROVOD_HOSTNAME"] for e in envs] == ["node1", "node1", "node2", "node2"]
    assert [e["HOROVOD_CROSS_RANK"] for e in envs] == ["0", "0", "1", "1"]
    assert {e["HOROVOD_GLOO_RENDEZVOUS_ADDR"] for e in envs} == {"node1"}
    assert {e["HOROVOD_GLOO_RENDEZVOUS_PORT"] for e in envs} == {str(rendezvous_port("77", 1))}
    assert host_assignments(layouts[0]) == "node1:2,node2:2"
    assert horovod_gloo_env(layouts[0], {"HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.1"})[
        "HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "127.0.0.1"


def test_prepare_keeps_one_model_dir_per_experiment():
    profile = load_profile("localslurm")
    a = prepare(profile, get_recipe("smoke"), 2)
    b = prepare(profile, get_recipe("smoke"), 2)
    assert a.paths.model_dir == b.paths.model_dir
    assert a.resolved.trainer_flags["model_dir"] == str(a.paths.model_dir)
    assert a.sbatch_text() == b.sbatch_text()
    with pytest.raises(ConfigError, match="--name"):
        prepare(profile, get_recipe("smoke"), 2, name="a b")


def test_fault_fields_reach_the_script_and_the_trainer(tmp_path):
    a100, local = load_profile("dgxa100"), load_profile("localslurm")
    assert (a100.stall_timeout_s, a100.first_step_grace_s, a100.max_fault_requeues, a100.checkpoint_every_min) == (
        900, 1800, 3, 30)
    assert (local.stall_timeout_s, local.first_step_grace_s, local.checkpoint_every_min) == (60, 120, 0)
    assert resolve(get_recipe("b4_amp"), a100, 1).trainer_flags["checkpoint_every_min"] == 30
    assert resolve(get_recipe("b4_amp"), a100, 1, {"checkpoint_every_min": "5"}).trainer_flags[
        "checkpoint_every_min"] == 5
    assert "checkpoint_every_min" not in resolve(get_recipe("smoke_bench"), local, 1).trainer_flags
    local = dataclasses.replace(local, experiments_dir=str(tmp_path))
    train, bench = prepare(local, get_recipe("smoke"), 2), prepare(local, get_recipe("smoke_bench"), 2)
    assert (train.spec.stall_timeout_s, train.spec.first_step_grace_s, train.profile.max_fault_requeues) == (60, 120, 3)
    assert (bench.spec.stall_timeout_s, bench.spec.first_step_grace_s) == (0, 0)  # no heartbeat outside training
    assert train.spec.model_dir == str(train.paths.model_dir)
    text = train.sbatch_text()
    assert f"model_dir={train.paths.model_dir}\n" in text and " --stall-s=60 --grace-s=120 " in text
    assert f"attempt=(python3 {train.paths.host_side} " in text
    assert "srun --unbuffered --open-mode=append --kill-on-bad-exit=1" in text


def test_profile_validation_in_process():
    with pytest.raises(ConfigError, match="one task per GPU"):
        from_mapping({"name": "x", "gpu_type": "a100", "gpus_per_node": 8, "tasks_per_node": 4}, "x")
    with pytest.raises(ConfigError, match="local executor"):
        from_mapping({"name": "x", "executor": "local", "max_nodes": 2}, "x")


def test_sweep_renders_one_job_per_node_count():
    proc = submit_cli("--cluster", "dgxa100", "--sweep", "nodes=4,1,2", "--benchmark", "b0_amp", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("#SBATCH --nodes=")] == [
        "#SBATCH --nodes=1", "#SBATCH --nodes=2", "#SBATCH --nodes=4"]
    assert proc.stdout.count("# mode benchmark, global batch") == 3
    assert "/lustre/experiments/effnet/sweep-b0_amp-bench-dgxa100/4n/submitit/%j_0_log.out" in proc.stdout
    assert "node counts must be integers" in one_line_error(submit_cli("--cluster", "dgxa100", "--sweep", "nodes=1,a",
                                                                       "b0_amp", "--dry-run"))
    assert "only sweepable key is nodes" in one_line_error(submit_cli("--cluster", "dgxa100", "--sweep", "gpus=1",
                                                                      "b0_amp", "--dry-run"))
    assert "1 to 64" in one_line_error(submit_cli("--cluster", "dgxa100", "--sweep", "nodes=1,128", "b0_amp",
                                                  "--dry-run"))


@pytest.mark.parametrize("tool", ["jobs.submit --cluster dgxa100 --nodes 4 b4_amp --show",
                                  "jobs.submit --cluster dgxa100 --nodes 4 b4_amp --dry-run",
                                  "jobs.subfiles --cluster dgx1v100 --recipe b0_amp"])
def test_a_reader_that_stops_early_ends_the_tool_quietly(tool):
    """`... | head`: the reader closes the pipe (here before a line is written); the tool ends with a
    shell's SIGPIPE status and no BrokenPipeError traceback."""
    command = f"set -o pipefail; {shlex.quote(sys.executable)} -m {tool} | true"
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_status_and_logs_say_where_they_looked_and_which_tasks_there_are(tmp_path):
    profile = tmp_path / "mine.toml"
    profile.write_text(f'name = "mine"\nexperiments_dir = "{tmp_path / "experiments"}"\n')
    paths = ExperimentPaths.create(tmp_path / "experiments", "exp")
    paths.root.mkdir(parents=True)
    paths.record_submission({"job_id": "7", "ranks": 2})

    def tool(module: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    line = one_line_error(tool("jobs.status", "nope", "--cluster", str(profile)))
    assert str(tmp_path / "experiments" / "nope") in line and "--cluster" not in line  # it was given
    assert "with the --cluster it was submitted to" in one_line_error(tool("jobs.status", "nope"))
    assert one_line_error(tool("jobs.logs", "exp", "--cluster", str(profile), "--task", "5")).endswith(
        "--task 5: job 7 has 2 task(s), 0 to 1")
    assert "job 7 has not started task 1" in one_line_error(tool("jobs.logs", "exp", "--cluster", str(profile),
                                                                 "--task", "1"))
    (paths.submitit_dir).mkdir()
    paths.task_log("7", 1).write_text("rank 1 says hello\n")
    assert tool("jobs.logs", str(paths.root), "--task", "1").stdout == "rank 1 says hello\n"
