"""From (profile, recipe, nodes) to a job: the JobSpec, the sbatch text, and the submitit executor.

`prepare()` does every check and builds everything a submission needs without touching the
cluster, so `--dry-run` prints exactly the script a real submission hands to sbatch.
"""
from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from effnet.core.errors import ConfigError
from effnet.core.paths import ExperimentPaths
from jobs.containers import profile_problem, visible_problem
from jobs.profile import ClusterProfile, check_signal_fits, experiments_dir
from jobs.recipes import Recipe, ResolvedRecipe, resolve
from jobs.render import JobLogs, JobSpec, render_sbatch

SUBMITIT_COMMAND = ("-u", "-m", "submitit.core._submit")
HOST_SIDE = Path(__file__).resolve().parent / "host"


@dataclass(frozen=True)
class PreparedJob:
    profile: ClusterProfile
    resolved: ResolvedRecipe
    paths: ExperimentPaths
    spec: JobSpec
    python: str

    @property
    def command(self) -> list[str]:
        """What submitit hands our script hook (test_launcher checks), so a dry run prints the real script."""
        return [self.python, *SUBMITIT_COMMAND, str(self.paths.submitit_dir)]

    def sbatch_text(self) -> str:
        return render_sbatch(self.spec, self.command)


def job_header(resolved: ResolvedRecipe, profile: ClusterProfile, nodes_text: str, python: str) -> tuple[str, ...]:
    lines = [f"effnet-slurm: recipe {resolved.recipe} on cluster {profile.name}, {nodes_text} x "
             f"{profile.tasks_per_node} rank(s) per node",
             f"mode {resolved.mode}, global batch {resolved.global_batch}, "
             f"peak lr {resolved.peak_lr:g}, launch {profile.launch}"]
    lines += [f"stage {s.index + 1}: {s.describe()}" for s in resolved.stages]
    # What submitit's pickle holds (jobs.task.RankTask), as the command line that does the same.
    flags = [f"--{k}={v}" for k, v in resolved.trainer_flags.items()]
    lines += ["each rank runs (through submitit) the equivalent of:",
              f"  {python} -u -m jobs.task --launch={profile.launch} --"]
    lines += ["    " + " ".join(flags[i:i + 4]) for i in range(0, len(flags), 4)]
    return tuple(lines)


def job_spec(profile: ClusterProfile, resolved: ResolvedRecipe, paths: ExperimentPaths, nodes: int,
             time_limit_min: int | None = None) -> JobSpec:
    """The profile plus what this job adds: its paths and logs, nodes and time, whether it trains."""
    logs = JobLogs(batch_output=paths.batch_log_pattern("out"), batch_error=paths.batch_log_pattern("err"),
                   task_output=paths.task_log_pattern("out"), task_error=paths.task_log_pattern("err"))
    header = job_header(resolved, profile, f"{nodes} node(s)", profile.rank_python)
    return JobSpec(profile, f"effnet-{resolved.recipe}", model_dir=str(paths.model_dir),
                   host_side=str(paths.host_side), experiments_dir=str(paths.root.parent), nodes=nodes,
                   time_limit_min=time_limit_min, watched=resolved.trains, logs=logs, header=header)


def check_container(spec: JobSpec, submit_dir: Path) -> None:
    """The container fields as the job will use them (the experiments mount included): one line on what
    Pyxis would refuse or misread, before anything is written or submitted."""
    profile = spec.profile
    made = tuple(m for m in spec.container_mounts if m not in profile.container_mounts)
    problem = profile_problem(profile.container_image, spec.container_mounts, profile.container_workdir) or \
        visible_problem(profile.container_image, profile.container_mounts, profile.container_workdir, submit_dir,
                        made)
    if problem:
        raise ConfigError(f"cluster {profile.name}: {problem}")


def prepare(profile: ClusterProfile, recipe: Recipe, nodes: int, overrides: dict[str, str] | None = None,
            time_limit_min: int | None = None, name: str = "") -> PreparedJob:
    if time_limit_min is not None:
        if time_limit_min < 1:
            raise ConfigError(f"--time {time_limit_min}: must be at least 1 minute")
        check_signal_fits(profile, time_limit_min, f"--time {time_limit_min}")
    name = name or f"{recipe.name}-{profile.name}-{nodes}n"
    # A sweep nests its experiments one level down: <sweep>/<N>n.
    if not name or any(not part or not all(c.isalnum() or c in "._-" for c in part) for part in name.split("/")) \
            or name.count("/") > 1 or name.startswith("."):
        raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only")
    paths = ExperimentPaths.create(experiments_dir(profile), name)
    resolved = resolve(recipe, profile, nodes, overrides, model_dir=str(paths.model_dir),
                       data_dir=profile.rank_data_dir)
    spec = job_spec(profile, resolved, paths, nodes, time_limit_min)
    if profile.uses_container:
        check_container(spec, Path.cwd())
    return PreparedJob(profile, resolved, paths, spec, profile.rank_python)


def _slurm_executor_class():
    import submitit

    class ProfileSlurmExecutor(submitit.SlurmExecutor):
        """submitit's Slurm executor (pickling, sbatch, job ids, sacct states, results); the script is ours.

        Why not submitit's template with `setup`/`teardown`/`srun_args`: the script must capture srun's
        status and requeue on 75 from the host under a restart cap, send the profile's signal (submitit
        fixes USR2), and stay the one renderer the sbatch/*.sub files share (and its watchdog
        beside srun); its teardown could do the requeue only by relying on the private template's layout.
        `_make_submission_file_text` is SlurmExecutor's only hook for the script text; it renders the
        `command` submitit passes, so submitit still decides what runs. Resources go through
        `update_parameters`; ExperimentPaths spells submitit's log names. test_launcher pins all of it.
        """

        def __init__(self, prepared: PreparedJob) -> None:
            super().__init__(folder=prepared.paths.submitit_dir, python=shlex.quote(prepared.python))
            self.spec = prepared.spec
            self.update_parameters(nodes=self.spec.nodes, ntasks_per_node=prepared.profile.tasks_per_node,
                                   time=self.spec.time_limit)

        def _make_submission_file_text(self, command: str, uid: str) -> str:
            return render_sbatch(self.spec, shlex.split(command))

    return ProfileSlurmExecutor


def make_executor(prepared: PreparedJob):
    import submitit

    if prepared.profile.executor == "slurm":
        return _slurm_executor_class()(prepared)
    executor = submitit.LocalExecutor(folder=prepared.paths.submitit_dir)
    # The job's environment goes to the ranks through the executor's public `setup` (shell lines run
    # before its controller starts them), never into this process's os.environ.
    exports = [f"export {name}={shlex.quote(value)}" for name, value in prepared.profile.rank_env().items()]
    executor.update_parameters(nodes=1, tasks_per_node=prepared.profile.tasks_per_node,
                               timeout_min=prepared.spec.time_limit, setup=exports)
    return executor


def submit(prepared: PreparedJob):
    """Submit the job; returns the submitit Job. Records it in the experiment's metadata."""
    from jobs.task import RankTask

    prepared.paths.model_dir.mkdir(parents=True, exist_ok=True)
    prepared.paths.submitit_dir.mkdir(parents=True, exist_ok=True)
    # Every attempt of the job runs this copy, whatever happens to the checkout meanwhile.
    shutil.copytree(HOST_SIDE, prepared.paths.host_side, ignore=shutil.ignore_patterns("__pycache__"),
                    dirs_exist_ok=True)
    executor = make_executor(prepared)
    job = executor.submit(RankTask(prepared.resolved.trainer_flags, prepared.profile.launch))
    prepared.paths.record_submission({
        "job_id": str(job.job_id), "executor": prepared.profile.executor, "recipe": prepared.resolved.recipe,
        "cluster": prepared.profile.name, "nodes": prepared.resolved.nodes, "ranks": prepared.resolved.ranks,
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "trainer_flags": prepared.resolved.trainer_flags})
    return job
