"""Where everything of one experiment lives; the only place that builds these paths.

The launcher writes through it (submission records, sbatch scripts) and the trainer's outputs are
read back through it (the run log, checkpoints), so writer and reader cannot disagree on a name.

An experiment is a directory that outlives its jobs: the trainer's `model_dir` (checkpoints,
log.json) stays the same across requeues and resubmissions, so a job always resumes from it.

    <experiments_dir>/<name>/
        experiment.json      what was submitted: recipe, cluster, nodes, job ids
        attempts.jsonl       the attempt ledger: one line per attempt, by the batch script (effnet.core.ledger)
        model/               the trainer's model_dir
        host/                the batch script's host side (jobs/host), copied at submit
        submitit/            sbatch scripts, pickles and per-task logs (%j_%t_log.out/.err)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from effnet.core.ledger import ATTEMPTS_FILENAME

LOG_FILENAME = "log.json"
CHECKPOINTS_DIRNAME = "checkpoints"


@dataclass(frozen=True)
class ExperimentPaths:
    root: Path  # <experiments_dir>/<name>, absolute

    @classmethod
    def create(cls, experiments_dir: Path, name: str) -> "ExperimentPaths":
        if not experiments_dir.is_absolute():
            raise ValueError(f"experiments_dir must be absolute, got {experiments_dir}")
        return cls(experiments_dir / name)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def host_side(self) -> Path:
        """The copy of `jobs.host` the job's batch script runs, every attempt the same."""
        return self.root / "host"

    @property
    def submitit_dir(self) -> Path:
        return self.root / "submitit"

    @property
    def metadata(self) -> Path:
        return self.root / "experiment.json"

    @property
    def attempts(self) -> Path:
        """The attempt ledger, next to model_dir (where effnet.core.ledger.ledger_for_model_dir puts it)."""
        return self.root / ATTEMPTS_FILENAME

    @property
    def trainer_log(self) -> Path:
        return self.model_dir / LOG_FILENAME

    @property
    def checkpoints(self) -> Path:
        return self.model_dir / CHECKPOINTS_DIRNAME

    # submitit's names for task logs (its JobPaths.stdout/stderr): srun writes them, submitit's
    # Job.stdout() reads them. Core may not import submitit (.importlinter), so
    # tests/test_launcher.py pins these to JobPaths and fails if a submitit upgrade renames them.
    def task_log(self, job_id: str, task: int | str, stream: str = "out") -> Path:
        return self.submitit_dir / f"{job_id}_{task}_log.{stream}"

    def task_log_pattern(self, stream: str = "out") -> str:
        """The `%j_%t` pattern srun expands; the same names submitit reads back."""
        return str(self.task_log("%j", "%t", stream))

    def batch_log_pattern(self, stream: str = "out") -> str:
        """The batch script's own output shares task 0's file, as in submitit's own script."""
        return str(self.task_log("%j", 0, stream))

    def read_metadata(self) -> dict:
        if not self.metadata.is_file():
            return {}
        return json.loads(self.metadata.read_text())

    def record_submission(self, info: dict) -> dict:
        """Append one submission (job id and what it ran) to experiment.json, atomically."""
        data = self.read_metadata()
        data.setdefault("submissions", []).append(info)
        write_atomically(self.metadata, json.dumps(data, indent=2))
        return data

    def submissions(self) -> list[dict]:
        """What `record_submission` recorded, oldest first: one job id and what it ran each."""
        return self.read_metadata().get("submissions", [])


def write_atomically(path: Path, text: str) -> None:
    """Write-then-rename, so a reader never sees half a file (experiment.json, health records)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
