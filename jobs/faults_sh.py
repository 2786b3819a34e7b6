"""The batch script's fault handling, as bash text that `jobs.render` puts around srun.

It runs on the host, beside Pyxis containers too, so it uses bash and coreutils/sed/awk only and
reads what the ranks write under `<model_dir>/health/` (the contract in `effnet.core.health`):

- `effnet_begin` (before srun) records an attempt its batch script could not record (killed from
  outside), empties `health/`, and notes the checkpoint step the attempt resumes from.
- `effnet_watchdog` (in the background beside srun) notes ranks whose heartbeat goes stale (in
  `health/stale`, for the classifier) and ends the job step when no rank's progress
  advanced for `stall_timeout_s` (`first_step_grace_s` before the first progress, and after a rank
  wrote its `completed` record: rank 0 may still export a SavedModel), after writing
  `health/hang.json` and one line naming the ranks that stopped first: ranks whose heartbeat is
  stale (their process is stopped or dead), else ranks that never wrote one, else the slowest.
- `effnet_end` (after srun) classifies the attempt, appends its line to the attempt ledger
  (`effnet.core.ledger`) and requeues by cause, each group of causes with its own budget.

How an attempt is classified: `jobs.classify_sh`.
"""
from __future__ import annotations

import re
import shlex

from effnet.core.exits import EXIT_BAD_INPUT, EXIT_REQUEUE
from effnet.core.health import HEALTH_DIRNAME, HEARTBEAT_PREFIX, STOP_PREFIX, TIMELINE_FILENAME
from effnet.core.ledger import ATTEMPTS_FILENAME, HANG_RECORD
from effnet.core.paths import CHECKPOINTS_DIRNAME
from jobs.classify_sh import AFTER_SRUN

# The trainer rewrites its heartbeat every ~5 s: four missed beats mean the process is not running.
HEARTBEAT_STALE_S = 20
# The time-limit signal comes up to a minute early (Slurm's slack), then the trainer checkpoints.
SIGNAL_MARGIN_S = 120
NODE_CHECK_S = 20
# How long the requeued job may take to become pending before its ExcNodeList can be set.
EXCLUDE_TRIES = 20


def task_errs_function(pattern: str) -> str:
    """`effnet_task_errs`: the job's task error logs (srun's `--error` pattern, %j this job, %t any task),
    one path a line; none when srun's own stderr carries the tasks' (the classifier reads srun.err)."""
    if not pattern:
        return "effnet_task_errs() { :; }"
    parts = re.split(r"(%j|%t)", pattern)
    glob = "".join({"%j": '"${SLURM_JOB_ID}"', "%t": "*"}.get(p, shlex.quote(p) if p else "") for p in parts)
    return f'effnet_task_errs() {{ local f; for f in {glob}; do [ ! -f "$f" ] || echo "$f"; done; }}'


def settings(spec, model_dir_word: str) -> list[str]:
    """The variables the functions read; `model_dir_word` is model_dir as a shell word."""
    poll = max(1, min(5, spec.stall_timeout_s // 8))
    return [
        "# Fault handling (jobs/faults_sh.py): health files, watchdog, attempt ledger.",
        f"EFFNET_MODEL_DIR={model_dir_word}",
        f'EFFNET_HEALTH="$EFFNET_MODEL_DIR/{HEALTH_DIRNAME}"',
        f'EFFNET_LEDGER="$(dirname "$EFFNET_MODEL_DIR")/{ATTEMPTS_FILENAME}"',
        f'EFFNET_CHECKPOINT_INDEX="$EFFNET_MODEL_DIR/{CHECKPOINTS_DIRNAME}/checkpoint"',
        f"EFFNET_TASKS_PER_NODE={spec.tasks_per_node}",
        f"EFFNET_STALL_S={spec.stall_timeout_s} EFFNET_GRACE_S={spec.first_step_grace_s} EFFNET_POLL_S={poll}",
        f"EFFNET_STALE_S={HEARTBEAT_STALE_S} EFFNET_NODE_CHECK_S={NODE_CHECK_S} EFFNET_EXCLUDE_TRIES={EXCLUDE_TRIES}",
        f"EFFNET_MAX_REQUEUES={spec.max_requeues} EFFNET_MAX_FAULTS={spec.max_fault_requeues}",
        f"EFFNET_SIGNAL_DELAY_S={spec.signal_delay_s} EFFNET_SIGNAL_MARGIN_S={SIGNAL_MARGIN_S}",
        task_errs_function(spec.task_error),
    ]


# Before srun: reading the health files, the watchdog, and the start of an attempt.
BEFORE_SRUN = r'''effnet_say() { echo "effnet-slurm: $*"; }
effnet_warn() { echo "effnet-slurm: $*" >&2; }

# KEY < one-line JSON object: the value (a string keeps its JSON escapes, so it can be written back).
effnet_field() {
  sed -nE 's/.*"'"$1"'": ("(([^"\\]|\\.)*)"|(-?[0-9][0-9.eE+-]*|null|true|false)).*/\2\4/p' | head -n 1
}

# One line per heartbeat file: rank progress global_step host pid time mtime.
effnet_heartbeats() {
  local f rank line
  for f in "$EFFNET_HEALTH"/{HEARTBEAT}*; do
    rank=${f##*/{HEARTBEAT}}
    case $rank in '' | *[!0-9]*) continue ;; esac
    line=$(head -n 1 "$f" 2>/dev/null) || continue
    [ -z "$line" ] || echo "$rank $line $(stat -c %Y "$f" 2>/dev/null || echo 0)"
  done
}

effnet_set_hosts() { mapfile -t EFFNET_HOSTS < <(scontrol show hostnames "$1" 2>/dev/null); }
effnet_node_of() { echo "${EFFNET_HOSTS[$(($1 / EFFNET_TASKS_PER_NODE))]:-}"; }

# Ranks with a stop record, comma-separated.
effnet_stopped_ranks() {
  local f out=""
  for f in "$EFFNET_HEALTH"/{STOP}*.json; do
    [ -f "$f" ] && out="$out${out:+,}$(effnet_field rank < "$f")"
  done
  echo "$out"
}

# NOW [SKIP [STALE_S]]: "how<TAB>ranks<TAB>detail of the first": the ranks that stopped first, of
# those not in SKIP: stale heartbeats (oldest first), else ranks without one, else the lowest progress.
effnet_culprits() {
  effnet_heartbeats | awk -v now="$1" -v skip=",${2:-}," -v stale="${3:-$EFFNET_STALE_S}" -v n="$EFFNET_RANKS" '
    function add(r) { list = list (list == "" ? "" : ",") r; if (first == "") first = r }
    function out(how) {
      printf "%s\t%s\t%s\n", how, list, (first in age) ? "heartbeat " age[first] " s old, progress " \
        prog[first] ", step " step[first] : "no heartbeat"
      exit
    }
    index(skip, "," $1 ",") { done[$1] = 1; next }
    { prog[$1] = $2; step[$1] = $3; age[$1] = now - $7 }
    END {
      while (1) {
        b = ""
        for (r in age) if (!(r in used) && age[r] > stale && (b == "" || age[r] > age[b])) b = r
        if (b == "") break
        used[b] = 1; add(b)
      }
      if (list != "") out("stale heartbeat")
      for (r = 0; r < n; r++) if (!(r in age) && !(r in done)) add(r)
      if (list != "") out("no heartbeat")
      m = ""
      for (r in prog) if (m == "" || prog[r] < m) m = prog[r]
      for (r = 0; r < n; r++) if ((r in prog) && prog[r] == m) add(r)
      if (list != "") out("lowest progress")
    }'
}

effnet_end_step() {
  local steps step
  steps=$(squeue -h -s -j "$SLURM_JOB_ID" -o %i 2>/dev/null | grep -E "^${SLURM_JOB_ID}\.[0-9]+$")
  for step in ${steps:-${SLURM_JOB_ID}.0}; do
    scancel --signal=KILL "$step" || effnet_warn "scancel --signal=KILL $step failed"
  done
}

# NOW STALLED_S LIMIT_S: write the hang record, say who stopped first, end the job step.
effnet_hang() {
  local how ranks detail rank node step nodes=""
  IFS=$'\t' read -r how ranks detail < <(effnet_culprits "$1" "$(effnet_stopped_ranks)")
  for rank in ${ranks//,/ }; do nodes="$nodes${nodes:+, }\"$(effnet_node_of "$rank")\""; done
  rank=${ranks%%,*}
  node=$([ -z "$rank" ] || effnet_node_of "$rank")
  step=$(effnet_heartbeats | awk 'BEGIN { m = -1 } $3 + 0 > m { m = $3 + 0 } END { print m }')
  printf '{"cause": "hang", "time": %s, "stalled_s": %s, "limit_s": %s, "how": "%s", "rank": %s, "node": "%s", "ranks": [%s], "nodes": [%s], "global_step": %s, "detail": "%s"}\n' \
    "$1" "$2" "$3" "$how" "${rank:-null}" "$node" "$ranks" "$nodes" "$step" "$detail" > "$EFFNET_HEALTH/{HANG}"
  effnet_warn "hang: no progress for $2 s (limit $3 s); stopped first: rank(s) ${ranks:-?} on ${nodes//\"/} ($how${rank:+; rank $rank: $detail}); ending the job step"
  effnet_end_step
}

# NOW: note ranks whose heartbeat went stale without a stop record, as "rank heartbeat_time seen_time" in
# health/stale: Slurm's SIGCONT and SIGTERM at the end of the step revive a stopped rank, and its heartbeat.
effnet_mark_stale() {
  local how ranks hb rank
  IFS=$'\t' read -r how ranks hb < <(effnet_culprits "$1" "$(effnet_stopped_ranks)")
  [ "$how" = "stale heartbeat" ] || return 0
  for rank in ${ranks//,/ }; do
    grep -qs "^$rank " "$EFFNET_HEALTH/stale" ||
      echo "$rank $(stat -c %Y "$EFFNET_HEALTH/{HEARTBEAT}$rank") $1" >> "$EFFNET_HEALTH/stale"
  done
}

# In the background beside srun (killed when srun returns): end a step that stopped progressing.
effnet_watchdog() {
  [ "$EFFNET_STALL_S" -gt 0 ] || return 0
  local since best=-1 progressed=0 now max limit nap=""
  since=$(date +%s)
  trap '[ -z "$nap" ] || kill "$nap" 2>/dev/null; exit 0' TERM
  while :; do
    sleep "$EFFNET_POLL_S" &
    nap=$!
    wait "$nap"
    now=$(date +%s)
    max=$(effnet_heartbeats | awk 'BEGIN { m = -1 } $2 + 0 > m { m = $2 + 0 } END { print m }')
    effnet_mark_stale "$now"
    if [ "$max" -gt "$best" ]; then
      if [ "$best" -ge 0 ]; then progressed=1; since=$now; fi
      best=$max
    fi
    # The grace, not the stall timeout, also while finishing (export after a rank completed).
    limit=$EFFNET_GRACE_S
    if [ "$progressed" -eq 1 ] && ! grep -qs '"reason": "completed"' "$EFFNET_HEALTH"/{STOP}*.json; then
      limit=$EFFNET_STALL_S
    fi
    if [ $((now - since)) -ge "$limit" ]; then
      effnet_hang "$now" $((now - since)) "$limit"
      return 0
    fi
  done
}

# NODE [sinfo]: the node is not down or unresponsive in sinfo and (unless "sinfo") runs a task of this job.
effnet_node_answers() {
  case $(sinfo -h -n "$1" -o %T 2>/dev/null | head -n 1) in
    *'*' | down* | drain* | fail*) return 1 ;;
  esac
  [ "${2:-}" = sinfo ] && return 0
  timeout "$EFFNET_NODE_CHECK_S" srun --overlap --jobid="$SLURM_JOB_ID" -w "$1" -N1 -n1 true >/dev/null 2>&1
}

# The first node of the attempt (EFFNET_HOSTS) that sinfo reports down, failing or not responding.
effnet_down_node() {
  local IFS=,
  [ "${#EFFNET_HOSTS[@]}" -gt 0 ] || return 0
  sinfo -h -N -n "${EFFNET_HOSTS[*]}" -o '%N %T' 2>/dev/null | awk '$2 ~ /^(down|fail)|\*$/ { print $1; exit }'
}

# START: the first node of the attempt (EFFNET_HOSTS) whose slurmd started after START: a node lost and
# back before this attempt could start (as when the job cannot run without it) is no longer down.
effnet_restarted_node() {
  local hosts node since
  [ "${#EFFNET_HOSTS[@]}" -gt 0 ] || return 0
  hosts=$(IFS=,; echo "${EFFNET_HOSTS[*]}")
  scontrol show node -o "$hosts" 2>/dev/null | sed -nE 's/^NodeName=([^ ]+) .* SlurmdStartTime=([^ ]+) .*/\1 \2/p' |
    while read -r node since; do
      since=$(date -d "$since" +%s 2>/dev/null) || continue
      [ "$since" -le "${1%.*}" ] || { echo "$node"; break; }
    done
}

# NODE WHY END [RANK]: the attempt lost NODE (WHY says how it was seen); the rank at fault is RANK when it
# ran there (srun saw it fail first), else the rank there whose heartbeat went quiet first.
effnet_lost_node() {
  local how ranks hb rank
  cause=node_failure fault_node=$1 fault_rank="" detail="$1 $2"
  IFS=$'\t' read -r how ranks hb < <(effnet_culprits "$3" "$(effnet_stopped_ranks)" -1)
  for rank in ${4:-} ${ranks//,/ }; do
    [ "$(effnet_node_of "$rank")" = "$1" ] || continue
    fault_rank=$rank detail="$detail; rank $rank there stopped first"
    break
  done
}

# The highest global step in the heartbeats and stop records; nothing when none is known.
effnet_last_step() {
  local f
  {
    effnet_heartbeats | awk '{ print $3 }'
    for f in "$EFFNET_HEALTH"/{STOP}*.json; do [ ! -f "$f" ] || effnet_field global_step < "$f"; done
  } | awk '$1 ~ /^[0-9]+$/ && (m == "" || $1 + 0 > m) { m = $1 + 0 } END { print m }'
}

effnet_jstr() { if [ -n "$1" ]; then printf '"%s"' "$1"; else printf null; fi; }

# JOB ATTEMPT NODES START END RESUMED STATUS ACTION: append the attempt's line to the ledger, with
# when srun started and returned (step_start, step_end) and rank 0's timeline (effnet.core.health) for
# the restart phases. An attempt recorded by the next one (effnet_leftover) has no step_start.
effnet_record() {
  local prev replayed=0 timeline
  prev=$(tail -n 1 "$EFFNET_LEDGER" 2>/dev/null | effnet_field last_step)
  case $prev in '' | null | *[!0-9]*) ;; *) [ "$prev" -le "$6" ] || replayed=$((prev - $6)) ;; esac
  timeline=$(head -n 1 "$EFFNET_HEALTH/{TIMELINE}" 2>/dev/null)
  case $timeline in '{'*'}') ;; *) timeline=null ;; esac
  printf '{"job_id": "%s", "attempt": %s, "nodes": "%s", "start": %s, "end": %s, "cause": "%s", "resumed_from_step": %s, "last_step": %s, "steps_replayed": %s, "fault_rank": %s, "fault_node": %s, "exit_status": %s, "action": "%s", "error": %s, "step_start": %s, "step_end": %s, "timeline": %s, "detail": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$5" "$cause" "$6" "${last_step:-null}" "$replayed" "${fault_rank:-null}" \
    "$(effnet_jstr "$fault_node")" "${7:-null}" "$8" "$(effnet_jstr "$error")" "${EFFNET_STEP_START:-null}" \
    "${step_end:-null}" "$timeline" \
    "${detail//[\"\\]/}" >> "$EFFNET_LEDGER"
}

# CAUSE: how many attempts of this job the ledger holds in CAUSE's budget group, this one included.
effnet_used() {
  local group='rank_crash|hang|node_failure' n
  case $1 in preempted | time_limit) group='preempted|time_limit' ;; esac
  n=$(grep -cE "^\{\"job_id\": \"$SLURM_JOB_ID\", .*\"cause\": \"($group)\"" "$EFFNET_LEDGER" 2>/dev/null)
  echo $((${n:-0} + 1))
}

# The previous attempt's batch script was killed before it recorded the attempt: record it now.
effnet_leftover() {
  local job attempt start resumed nodes end node why
  read -r job attempt start resumed nodes < "$EFFNET_HEALTH/attempt"
  effnet_set_hosts "$nodes"
  end=$(effnet_heartbeats | awk -v m="$start" '$7 > m { m = $7 } END { print m }')
  last_step=$(effnet_last_step) cause=killed fault_rank="" fault_node="" error="" step_end=""
  detail="its batch script was killed (scancel, a requeue from outside, a lost node)"
  node=$(effnet_down_node) why="is down or not responding"
  [ -n "$node" ] || node=$(effnet_restarted_node "$start") why="was lost: its slurmd restarted during the attempt"
  [ -z "$node" ] || effnet_lost_node "$node" "$why" "$end"
  if [ "$cause" = killed ] && grep -qs '"reason": "signal"' "$EFFNET_HEALTH"/{STOP}*.json; then
    cause=preempted detail="checkpointed on a signal; then its batch script was killed"
  fi
  effnet_record "$job" "$attempt" "$nodes" "$start" "$end" "${resumed:-0}" "" requeue
  effnet_warn "attempt $attempt of job $job ended without its record: $cause${fault_node:+ ($fault_node)}"
  if [ "$cause" = node_failure ] && [ "$(effnet_used node_failure)" -gt $((EFFNET_MAX_FAULTS + 1)) ]; then
    effnet_warn "node_failure: the limit of $EFFNET_MAX_FAULTS fault requeues is reached; not starting attempt $EFFNET_ATTEMPT"
    exit 1
  fi
}

effnet_begin() {
  EFFNET_START=$(date +%s.%3N)
  EFFNET_ATTEMPT=$((${SLURM_RESTART_COUNT:-0} + 1))
  EFFNET_RANKS=$((${SLURM_JOB_NUM_NODES:-1} * EFFNET_TASKS_PER_NODE))
  mkdir -p "$EFFNET_HEALTH" "$(dirname "$EFFNET_LEDGER")"
  [ ! -f "$EFFNET_HEALTH/attempt" ] || effnet_leftover
  rm -rf "$EFFNET_HEALTH" && mkdir -p "$EFFNET_HEALTH"
  # The task logs are appended across attempts: what this attempt adds starts after these sizes.
  effnet_task_errs | while read -r f; do echo "$(stat -c %s "$f") $f"; done > "$EFFNET_HEALTH/task-err-sizes"
  EFFNET_RESUMED=$(sed -nE 's/^model_checkpoint_path: "(.*\/)?ckpt-([0-9]+)"$/\2/p' "$EFFNET_CHECKPOINT_INDEX" 2>/dev/null)
  EFFNET_RESUMED=${EFFNET_RESUMED:-0}
  echo "$SLURM_JOB_ID $EFFNET_ATTEMPT $EFFNET_START $EFFNET_RESUMED $SLURM_JOB_NODELIST" > "$EFFNET_HEALTH/attempt"
  effnet_set_hosts "$SLURM_JOB_NODELIST"
}
'''


# Before srun, when the ranks run in Pyxis containers: a requeued job keeps its id, and Pyxis names a
# step's container after it (pyxis_JOB.STEP). One that an earlier attempt left (its slurmstepd died
# with its node, so Pyxis never removed it) fails this attempt's step ("failed to create container
# filesystem"), or would be reused. On every node of the attempt, outside any container, remove them.
REMOVE_CONTAINERS = r'''effnet_remove_containers() {
  # shellcheck disable=SC2016  # expanded by each node's bash, not here
  timeout 120 srun --ntasks-per-node=1 --ntasks="$SLURM_JOB_NUM_NODES" --mpi=none --kill-on-bad-exit=0 bash -c '
    enroot list 2>/dev/null | grep -E "^pyxis_${SLURM_JOB_ID}[._]" | while read -r c; do
      if enroot remove -f "$c" >/dev/null 2>&1; then echo "effnet-slurm: $SLURMD_NODENAME: removed $c, left by an earlier attempt"
      else echo "effnet-slurm: $SLURMD_NODENAME: could not remove $c, left by an earlier attempt" >&2; fi
    done' || effnet_warn "could not look for containers left by earlier attempts on $SLURM_JOB_NODELIST"
}'''


def _fill(text: str) -> str:
    for key, value in (("{HEARTBEAT}", HEARTBEAT_PREFIX), ("{STOP}", STOP_PREFIX), ("{HANG}", HANG_RECORD),
                       ("{TIMELINE}", TIMELINE_FILENAME),
                       ("{EXIT_REQUEUE}", str(EXIT_REQUEUE)), ("{EXIT_BAD_INPUT}", str(EXIT_BAD_INPUT))):
        text = text.replace(key, value)
    return text


def before_srun(spec, model_dir_word: str) -> list[str]:
    """Settings and functions, then the attempt's start and the watchdog: the lines before srun."""
    containers = [REMOVE_CONTAINERS, "", "effnet_begin",
                  '[ "$EFFNET_ATTEMPT" -eq 1 ] || effnet_remove_containers'] if spec.container_image else ["effnet_begin"]
    return [*settings(spec, model_dir_word), "", _fill(BEFORE_SRUN).rstrip("\n"), "", *containers,
            "effnet_watchdog &",
            "EFFNET_WATCHDOG=$!",
            "# srun's own messages (which task failed first) also go to health/srun.err for the classifier.",
            'exec 3> >(tee -a "$EFFNET_HEALTH/srun.err" >&2)',
            "EFFNET_TEE=$!",
            "# From here to the ranks' start is srun's launch and, under Pyxis, the container's start.",
            "EFFNET_STEP_START=$(date +%s.%3N)"]


def after_srun() -> list[str]:
    return [_fill(AFTER_SRUN).rstrip("\n"), "", 'effnet_end "$status"']
