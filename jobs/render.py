"""The sbatch script of a job, as a pure function of a `JobSpec` (checked against golden files).

One script shape serves both `python -m jobs.submit` (whose command runs submitit's pickled rank
task) and the raw `sbatch/*.sub` files (whose command runs `python -m jobs.task`):

- `#SBATCH` lines: resources, `--signal` (delivered to the job steps, i.e. the trainer),
  `--requeue` and `--open-mode=append`;
- the environment, then one `srun` with the Pyxis container flags on the srun line (a
  containerised batch script could not run srun or scontrol);
- around srun, on the host, calls to `jobs.host` (run with the host's python3): `begin`, a
  `watchdog` beside srun that ends a hung step, and `end`, which tells a preemption or time limit,
  a finished run, a bug, a crashed rank, a hang and a lost node apart from the ranks' health
  files, records the attempt in the ledger and requeues by cause. `scontrol` is missing inside
  containers, which is why this cannot live in the task.

Every value is shell-quoted, so a profile value can never run as a command. A raw `.sub` script
reads the site's settings (image, data, experiments directory) from the environment at submit, with
the profile's values as defaults (`SiteSetting`); only those variables and Slurm's expand.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from effnet.core.health import HEALTH_DIRNAME
from effnet.core.ledger import FAULT_CAUSES, SIGNAL_CAUSES
from jobs.profile import ClusterProfile


@dataclass(frozen=True)
class SiteSetting:
    """A value a raw `.sub` script takes from the environment at submit (sbatch exports it), else `default`."""

    name: str
    default: str
    comment: str
    path: bool = False  # must be an absolute path (the nodes and containers see it by that name)


@dataclass(frozen=True)
class JobLogs:
    """Where the batch script's and the ranks' output go (Slurm filename patterns); "" : Slurm's defaults."""

    batch_output: str = ""
    batch_error: str = ""
    task_output: str = ""  # "": every rank's lines in the batch script's output, labelled with its rank
    task_error: str = ""


@dataclass(frozen=True)
class JobSpec:
    """One job's script: the cluster's profile, and what this job alone decides. Resources, requeue
    budgets, the launch, the container and the environment are the profile's, read from it here."""

    profile: ClusterProfile
    job_name: str
    model_dir: str  # the trainer's; its health/ and the attempt ledger next to it (jobs.host)
    host_side: str  # the directory of the `jobs.host` package the batch script runs
    experiments_dir: str  # mounted at the same path in a container: pickles, logs and model_dir have one name
    nodes: int | None = None  # None: taken from `sbatch -N`
    time_limit_min: int | None = None  # None: the profile's
    watched: bool = True  # a watchdog beside srun; modes that do not train write no heartbeat
    logs: JobLogs = JobLogs()
    header: tuple[str, ...] = ()  # comment lines describing the job
    site: tuple[SiteSetting, ...] = ()  # values written as ${NAME} read these from the environment

    @property
    def time_limit(self) -> int:
        return self.time_limit_min or self.profile.time_limit_min

    @property
    def stall_timeout_s(self) -> int:
        return self.profile.stall_timeout_s if self.watched else 0

    @property
    def first_step_grace_s(self) -> int:
        return self.profile.first_step_grace_s if self.watched else 0

    @property
    def container_mounts(self) -> tuple[str, ...]:
        """The profile's mounts plus the experiments directory at the same path inside and out."""
        if not self.profile.uses_container:
            return ()
        own = f"{self.experiments_dir}:{self.experiments_dir}"
        mounts = self.profile.container_mounts
        return tuple(mounts) + ((own,) if own not in mounts else ())


def sbatch_directives(spec: JobSpec) -> list[tuple[str, str | None]]:
    """(option, value) pairs in a fixed order; value None is a bare flag."""
    profile = spec.profile
    out: list[tuple[str, str | None]] = [("job-name", spec.job_name)]
    if spec.nodes is not None:
        out.append(("nodes", str(spec.nodes)))
    out += [("ntasks-per-node", str(profile.tasks_per_node)), ("cpus-per-task", str(profile.cpus_per_task))]
    if profile.gpus_per_node:
        out.append(("gpus-per-node", str(profile.gpus_per_node)))
    out.append(("mem", f"{profile.mem_per_node_gb}G" if profile.mem_per_node_gb else "0"))
    for key in ("partition", "account", "qos"):
        if getattr(profile, key):
            out.append((key, getattr(profile, key)))
    if profile.exclusive:
        out.append(("exclusive", None))
    out += [("time", str(spec.time_limit)), ("signal", f"{profile.signal}@{profile.signal_delay_s}"),
            ("requeue", None), ("open-mode", "append")]
    if spec.logs.batch_output:
        out.append(("output", spec.logs.batch_output))
    if spec.logs.batch_error:
        out.append(("error", spec.logs.batch_error))
    return out


def srun_words(spec: JobSpec) -> list[str]:
    profile, logs = spec.profile, spec.logs
    # One dead rank ends the step within seconds instead of leaving the others blocked in a collective.
    words = ["srun", "--unbuffered", "--open-mode=append", "--kill-on-bad-exit=1"]
    if logs.task_output:
        words.append(f"--output={logs.task_output}")
    else:  # every rank's lines in the batch script's output: each prefixed with its rank
        words.append("--label")
    if logs.task_error:
        words.append(f"--error={logs.task_error}")
    if profile.launch == "pmix":
        words.append("--mpi=pmix")
    if profile.cpu_bind:
        words.append(f"--cpu-bind={profile.cpu_bind}")
    if profile.uses_container:
        words.append(f"--container-image={profile.container_image}")
        if spec.container_mounts:
            words.append(f"--container-mounts={','.join(spec.container_mounts)}")
        if profile.container_workdir:
            words.append(f"--container-workdir={profile.container_workdir}")
        if profile.container_writable:
            words.append("--container-writable")
        words.append("--no-container-mount-home")
    return words


def _quote(word: str) -> str:
    return shlex.quote(word)


def _quote_expanding(word: str, names: tuple[str, ...] = ()) -> str:
    """Quoted, but `${SLURM_...}` and the site settings' `${NAME}` in it expand (the raw .sub files)."""
    variables = "|".join(("SLURM_[A-Z_]+", *map(re.escape, names)))
    parts = re.split(rf"(\$\{{(?:{variables})\}})", word)
    return "".join(f'"{p}"' if i % 2 else _quote(p) for i, p in enumerate(parts) if p)


def site_lines(spec: JobSpec) -> list[str]:
    """The site's settings, each from the environment else the profile; then what sbatch alone can read."""
    if not spec.site:
        return []
    lines = ["# The site's settings: the profile's values, or yours from the environment at submit, e.g.",
             "#   DATA_DIR=/my/tfrecords sbatch -p my_partition -N 4 THIS_FILE.sub"]
    for setting in spec.site:
        lines += [f"# {setting.comment}", f"{setting.name}=${{{setting.name}:-{_quote(setting.default)}}}"]
    paths = [setting.name for setting in spec.site if setting.path]
    if paths:
        lines += [f"for setting in {' '.join(paths)}; do",
                  '  case ${!setting} in /*) ;; *) echo "effnet-slurm: $setting=${!setting}: not an absolute path" >&2; '
                  'exit 2 ;; esac',
                  "done"]
    lines += ["# The partition is sbatch's to choose (-p, or SBATCH_PARTITION): #SBATCH lines cannot read PARTITION.",
              'if [ -n "${PARTITION:-}" ] && [ "$PARTITION" != "${SLURM_JOB_PARTITION:-}" ]; then',
              '  echo "effnet-slurm: PARTITION=$PARTITION, but this job runs in ${SLURM_JOB_PARTITION:-?}: '
              'submit with sbatch -p $PARTITION" >&2',
              "  exit 2",
              "fi"]
    return lines


def host_side_lines(spec: JobSpec, model_dir_word: str, helper_word: str) -> list[str]:
    """The bash array `attempt`: `python3 DIR` and the options every call of `jobs.host` takes: where the
    health files are, the watchdog's limits, which causes requeue with their budgets (effnet.core.ledger's
    groups), one group a line."""
    profile = spec.profile
    poll = max(1, min(5, spec.stall_timeout_s // 8))
    groups = [[f"--tasks-per-node={profile.tasks_per_node}", f"--stall-s={spec.stall_timeout_s}",
               f"--grace-s={spec.first_step_grace_s}", f"--poll-s={poll}", f"--signal-delay-s={profile.signal_delay_s}"],
              [f"--requeue={','.join(SIGNAL_CAUSES)}={profile.max_requeues}",
               f"--fault-requeue={','.join(FAULT_CAUSES)}={profile.max_fault_requeues}"],
              [f"--task-error={spec.logs.task_error}"] if spec.logs.task_error else [],
              ["--containers"] if profile.uses_container else []]
    # Quoted when a comma is in them too: shellcheck takes a comma in an array for a mistaken separator.
    lines = [f"attempt=(python3 {helper_word} --model-dir {model_dir_word}"]
    lines += ["  " + " ".join(_quote(w) if _quote(w) != w or "," not in w else f"'{w}'" for w in group)
              for group in groups if group]
    lines[-1] += ")"
    return lines


def render_sbatch(spec: JobSpec, command: list[str]) -> str:
    """The complete batch script. Every word is quoted; `${SLURM_...}` and `${NAME}` of the site
    settings expand (the raw .sub files' model_dir has the node count and the experiments directory)."""
    if not spec.model_dir or not spec.host_side:
        raise ValueError("JobSpec.model_dir and host_side are required: the batch script runs jobs.host on the "
                         "ranks' health files")
    names = tuple(setting.name for setting in spec.site)
    lines = ["#!/bin/bash"]
    lines += [f"# {line}" if line else "#" for line in spec.header]
    lines += [f"#SBATCH --{k}" if v is None else f"#SBATCH --{k}={_quote(v)}" for k, v in sbatch_directives(spec)]
    lines += ["", "set -u", *site_lines(spec),
              "# submitit's JobEnvironment in each rank tells the scheduler by this (as submitit's own script sets it).",
              "export SUBMITIT_EXECUTOR=slurm"]
    lines += [f"export {name}={_quote(value)}" for name, value in spec.profile.rank_env().items()]
    lines += [
        "",
        "# On the host, beside the ranks (jobs/host): begin, a watchdog beside srun, end (classify, ledger, requeue).",
        f"model_dir={_quote_expanding(spec.model_dir, names)}",
        *host_side_lines(spec, '"$model_dir"', _quote_expanding(spec.host_side, names)),
        'echo "effnet-slurm: job ${SLURM_JOB_ID} attempt $((${SLURM_RESTART_COUNT:-0} + 1)) on ${SLURM_JOB_NODELIST}"',
        '[ -d "${attempt[1]}" ] || { echo "effnet-slurm: ${attempt[1]} is missing: submit .sub scripts from the '
        'effnet-slurm checkout" >&2; exit 2; }',
        '"${attempt[@]}" begin || exit',
        '"${attempt[@]}" watchdog &',
        "watchdog=$!",
        "# srun's own messages (which task failed first) also go to health/srun.err, for `end`.",
        f'exec 3> >(tee -a "$model_dir/{HEALTH_DIRNAME}/srun.err" >&2)',
        "tee=$!",
        "step_start=$(date +%s.%3N)",
        "",
    ]
    cmd = [_quote_expanding(w, names) for w in command]
    srun = [_quote_expanding(w, names) for w in srun_words(spec)]
    # One option per line; a long trainer command gets one flag per line after its `--`.
    split = command.index("--") + 1 if "--" in command else len(cmd)
    parts = [" ".join(srun[:4]), *srun[4:], " ".join(cmd[:split]), *("    " + w for w in cmd[split:]), "2>&3"]
    lines.append(" \\\n    ".join(parts))
    lines += ["status=$?",
              "step_end=$(date +%s.%3N)",
              'kill "$watchdog" 2>/dev/null',
              "exec 3>&-",
              'wait "$watchdog" "$tee" 2>/dev/null',
              'exec "${attempt[@]}" end "$status" --step-start="$step_start" --step-end="$step_end"',
              ""]
    return "\n".join(lines)
