"""The Slurm commands the host side runs, one method each (tests answer them in-process)."""
import re
import subprocess
import time

from .records import warn

NODE_CHECK_S = 20


class Slurm:
    """The Slurm commands the host side runs, one method each (tests answer them in-process)."""

    def __init__(self, job_id):
        self.job_id = job_id

    def run(self, *args, timeout=60):
        try:
            proc = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  universal_newlines=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    def hostnames(self, nodelist):
        return (self.run("scontrol", "show", "hostnames", nodelist) or "").split()

    def node_states(self, nodes=(), partition=""):
        """node -> sinfo state ("idle", "down*", ...): of `nodes`, else of the partition (else all)."""
        args = ["sinfo", "-h", "-N", "-o", "%N %T"]
        args += ["-n", ",".join(nodes)] if nodes else (["-p", partition] if partition else [])
        pairs = (line.split() for line in (self.run(*args) or "").splitlines())
        return {p[0]: p[1] for p in pairs if len(p) == 2}

    def node_runs_a_task(self, node):
        return self.run("srun", "--overlap", "--jobid=" + self.job_id, "-w", node, "-N1", "-n1", "true",
                        timeout=NODE_CHECK_S) is not None

    def slurmd_starts(self, nodes):
        """node -> when its slurmd started (unix seconds)."""
        out = {}
        for line in (self.run("scontrol", "show", "node", "-o", ",".join(nodes)) or "").splitlines():
            fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
            try:
                out[fields["NodeName"]] = time.mktime(time.strptime(fields["SlurmdStartTime"], "%Y-%m-%dT%H:%M:%S"))
            except (KeyError, ValueError):
                continue
        return out

    def time_left_s(self):
        """Seconds left of the job's time limit (squeue %L: [D-]HH:MM:SS), or None."""
        text = (self.run("squeue", "-h", "-j", self.job_id, "-o", "%L") or "").strip()
        match = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+)*)", text)
        if not match:
            return None
        seconds = 0
        for part in match.group(2).split(":"):
            seconds = seconds * 60 + int(part)
        return int(match.group(1) or 0) * 86400 + seconds

    def end_steps(self):
        steps = [s for s in (self.run("squeue", "-h", "-s", "-j", self.job_id, "-o", "%i") or "").split()
                 if re.fullmatch(re.escape(self.job_id) + r"\.\d+", s)]
        for step in steps or [self.job_id + ".0"]:
            if self.run("scancel", "--signal=KILL", step) is None:
                warn("scancel --signal=KILL {} failed".format(step))

    def requeue(self):
        return self.run("scontrol", "requeue", self.job_id) is not None

    def excluded(self):
        line = self.run("scontrol", "show", "job", "-o", self.job_id) or ""
        match = re.search(r"\bExcNodeList=(\S+)", line)
        return "" if not match or match.group(1) == "(null)" else match.group(1)

    def exclude(self, nodelist):
        return self.run("scontrol", "update", "JobId=" + self.job_id, "ExcNodeList=" + nodelist) is not None


def node_is_up(state):
    return not (state.endswith("*") or state.startswith(("down", "drain", "fail")))
