"""The README is a newcomer's first screen: every command in it runs as written, its profile is a
valid copy of `dgxa100`, and every link lands. The commands that read `make demo`'s experiment run
against a real `--cluster local` job made under the same name, in a directory of its own.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bench.slurm_jobs import write_profile
from jobs.profile import ClusterProfile, from_mapping, load_profile
from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
DEMO_EXPERIMENT = "runs/experiments/demo-local-1n"


def readme_commands() -> list[str]:
    """The commands of the README's indented code blocks, continuation lines joined."""
    commands, joined = [], ""
    for line in README.read_text().splitlines():
        if not line.startswith("    ") or line.strip().startswith("#"):
            continue
        joined += line.strip()
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        commands.append(joined)
        joined = ""
    return commands


def shell_words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def run_as_written(command: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`command` through bash in `cwd`, with this venv's python first on PATH and the checkout importable."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_readme_fits_a_screenful_and_links_land():
    assert len(README.read_text().splitlines()) <= 200
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"


def test_every_readme_command_is_one_this_test_runs():
    """A command added to the README must be run by one of these tests (or be one of the make targets)."""
    for command in readme_commands():
        words = shell_words(command)
        assert words[:1] == ["make"] or "python" in words or "sbatch" in words, command
        if "python" in words:
            assert words[words.index("python") + 1] == "-m", command


@pytest.mark.parametrize("command", [c for c in readme_commands() if DEMO_EXPERIMENT not in c
                                     and "python" in shell_words(c)])
def test_readme_command_runs_as_written(command, tmp_path):
    """Run from a directory of its own (a redirect writes there); a DGX submission as a dry run."""
    words = shell_words(command)
    if "jobs.submit" in words and words[words.index("--cluster") + 1].startswith("dgx") and \
            not {"--dry-run", "--show"} & set(words):
        command = shlex.join([*words, "--dry-run"])
    proc = run_as_written(command, tmp_path)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip() or any(tmp_path.iterdir()), command


def test_the_raw_sub_example_names_a_shipped_script_and_its_settings():
    (command,) = [c for c in readme_commands() if "sbatch" in shell_words(c)]
    words = shell_words(command)
    script = ROOT / words[-1]
    assert script.is_file() and os.access(script, os.X_OK)
    for assignment in (w for w in words if re.match(r"^[A-Z_]+=", w)):
        name = assignment.split("=", 1)[0]
        assert f"{name}=${{{name}:-" in script.read_text(), f"{script.name} does not read {name}"


def readme_profile_text() -> str:
    block = re.search(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert block, "the README's site profile"
    return block.group(1)


def test_the_readme_profile_is_dgxa100_cut_down_and_submits(tmp_path):
    dgx = load_profile("dgxa100")
    profile = from_mapping(tomllib.loads(readme_profile_text()), "README")
    # The fields it leaves out have dgxa100's values as their defaults: the same cluster, renamed.
    assert dataclasses.replace(profile, name=dgx.name, description=dgx.description) == dgx
    text = README.read_text()
    for site_value in ("partition", "account", "container_image", "container_mounts", "experiments_dir", "[env]"):
        line = next(line for line in text.splitlines() if line.startswith(site_value))
        assert "# SITE" in line, f"{site_value} is not marked as a site's to change"
    path = tmp_path / "mycluster.toml"
    path.write_text(readme_profile_text())
    proc = run_as_written(f"python -m jobs.submit --cluster {path} --nodes 4 b4_amp --dry-run", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--container-image=/lustre/containers/effnet-slurm.sqsh" in proc.stdout


def test_the_field_reference_names_every_profile_field():
    reference = (DOCS / "launcher.md").read_text()
    for field in dataclasses.fields(ClusterProfile):
        name = "[env]" if field.name == "env" else field.name
        assert f"`{name}`" in reference, f"docs/launcher.md does not describe {name}"


def test_the_demo_commands_run_on_a_local_job(tmp_path):
    """`--cluster local` end to end (submitit's local executor, 2 Horovod ranks), as `make demo` runs it,
    on the shipped photos; then the README's commands that read the demo's experiment, as written, from
    a directory whose runs/experiments is that profile's."""
    profile = write_profile(tmp_path / "work", "local")
    experiments = Path(tomllib.loads(profile.read_text())["experiments_dir"])
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "experiments").symlink_to(experiments, target_is_directory=True)
    submit = run_as_written(f"python -m jobs.submit --cluster {profile} smoke --name demo-local-1n "
                            "--set max_epochs=1 --set skip_eval=false", tmp_path, timeout=900)
    assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-3000:]
    commands = [c for c in readme_commands() if DEMO_EXPERIMENT in c]
    assert len(commands) >= 3
    for command in commands:
        proc = run_as_written(command, tmp_path)
        assert proc.returncode == 0 and proc.stdout.strip(), f"{command}\n{proc.stderr[-3000:]}"
