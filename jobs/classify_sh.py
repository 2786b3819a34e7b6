"""The batch script after srun, as bash text (see `jobs.faults_sh` for the whole): classify the
attempt, append its line to the attempt ledger (`effnet.core.ledger`), requeue by cause.

Classification, first rule that applies (the rank that stopped first decides):
  1. status 0: completed;
  1b. the ranks did not start: Pyxis or enroot could not make the container (a missing image, a bad
     mount), or Open MPI or PMIx could not initialise (a read-only container root): app_error, whose
     error is those lines of this attempt's task logs (or of srun's stderr);
  2. a `signal` stop record (or status 75), unless srun reports that a task without one failed first
     (srun --kill-on-bad-exit then ends the others with SIGTERM, which they take for a preemption):
     preempted, or time_limit when less than the signal delay + SIGNAL_MARGIN_S of the time limit is
     left (squeue %L);
  3. a node of the attempt that srun reports lost ("Node failure on NODE") or sinfo reports down
     or not responding: node_failure (Slurm may also requeue the job itself: NODE_FAIL);
  4. the watchdog's hang record: hang (app_error if an app_error record is older than it); else a
     rank the watchdog saw go stale (health/stale) before the first app_error record: hang (a
     stopped rank makes the others' collectives time out, Gloo's after 30 s);
  5. a rank without a stop record whose heartbeat went quiet HEARTBEAT_STALE_S before the first
     app_error record (or the end of srun): that rank crashed, the others' errors followed;
  6. the first task srun reports failed ("srun: error: NODE: task N: ..."): app_error when that
     rank wrote an app_error record, else that rank crashed;
  7. any app_error record: app_error; exit status 2 (bad input): app_error;
  8. otherwise the rank whose heartbeat went quiet first crashed.
A crash or hang whose node does not answer (sinfo down/not responding, or `srun --overlap -w NODE
true` fails within NODE_CHECK_S) is a node_failure; a rank_crash at the same last step as the
previous attempt's rank_crash is an app_error (deterministic).

Recovery: preempted and time_limit requeue while this job has had at most max_requeues of them,
rank_crash, hang and node_failure while at most max_fault_requeues (both counted in the ledger, by
job id: SLURM_RESTART_COUNT counts every requeue of every cause); after a fault with a culprit node
the requeued job excludes that node (ExcNodeList, while it is pending) when the partition keeps
enough usable nodes. app_error and completed are final; app_error exits non-zero (job FAILED).
"""
from __future__ import annotations

# After srun (the helpers it calls come before srun, in jobs.faults_sh).
AFTER_SRUN = r'''# This attempt's lines that say the ranks did not start, at most three, joined: Pyxis's and enroot's
# (after `slurmstepd-NODE: error: `), or MPI_Init's and PMIx's.
effnet_start_error() {
  local f size
  { effnet_task_errs | while read -r f; do
      size=$(awk -v f="$f" '{ p = $0; sub(/^[0-9]+ /, "", p) } p == f { print $1; exit }' "$EFFNET_HEALTH/task-err-sizes" 2>/dev/null)
      tail -c +$((${size:-0} + 1)) "$f"
    done; cat "$EFFNET_HEALTH/srun.err" 2>/dev/null; } |
    sed -nE 's/^(slurmstepd[^ ]*: )?(error: )?//; s/pyxis: +/pyxis: /; /^pyxis: .*(\[ERROR\]|failed to|couldn.t|not started)|An error occurred in MPI_Init|session_dir\.c|pmix_init failed/p' |
    grep -v 'failed with error code' | awk '!seen[$0]++' | head -n 3 | paste -sd '|' | sed 's/|/; /g; s/["\\]//g'
}

# A fault on a node that does not answer is a node_failure.
effnet_check_node() {
  if [ -n "$fault_node" ] && ! effnet_node_answers "$fault_node"; then
    cause=node_failure detail="$detail; $fault_node does not answer"
  fi
}

# RANK DETAIL: RANK crashed; a node_failure when its node does not answer; an app_error when the
# previous attempt crashed at the same step (deterministic).
effnet_crash() {
  local prev
  cause=rank_crash fault_rank=$1 detail=$2
  fault_node=$([ -z "$1" ] || effnet_node_of "$1")
  effnet_check_node
  [ "$cause" = rank_crash ] || return 0
  prev=$(tail -n 1 "$EFFNET_LEDGER" 2>/dev/null)
  if [ "$(effnet_field cause <<< "$prev")" = rank_crash ] && [ "$(effnet_field last_step <<< "$prev")" = "${last_step:-null}" ]; then
    cause=app_error error="rank ${1:-?} crashed at step ${last_step:-?} again: deterministic, not retried"
  fi
}

effnet_signal_cause() {
  local left
  left=$(squeue -h -j "$SLURM_JOB_ID" -o %L 2>/dev/null | awk '{
    d = 0; t = $1
    if (t ~ /^[0-9]+-/) { d = substr(t, 1, index(t, "-") - 1); t = substr(t, index(t, "-") + 1) }
    if (t !~ /^[0-9]+(:[0-9]+)*$/) exit
    n = split(t, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print d * 86400 + s }')
  cause=preempted detail="checkpointed on the signal${left:+ with $left s of the time limit left}"
  if [ -n "$left" ] && [ "$left" -le $((EFFNET_SIGNAL_DELAY_S + EFFNET_SIGNAL_MARGIN_S)) ]; then cause=time_limit; fi
}

# RANK: the rank's app_error.
effnet_app_error() {
  cause=app_error fault_rank=$1 fault_node=$(effnet_node_of "$1") detail="rank $1 stopped on an error"
  error=$(effnet_field error < "$EFFNET_HEALTH/{STOP}$1.json")
}

# STATUS END: sets cause, fault_rank, fault_node, error, detail and last_step (the rules: jobs/classify_sh.py).
effnet_classify() {
  local f rank t seen app_rank="" app_time="" stopped how ranks hb line first="" why=""
  cause="" fault_rank="" fault_node="" error="" detail="" last_step=$(effnet_last_step) stopped=$(effnet_stopped_ranks)
  if [ "$1" -eq 0 ]; then cause=completed detail="srun exited 0"; return; fi
  error=$(effnet_start_error)
  if [ -n "$error" ]; then cause=app_error detail="the ranks did not start"; return; fi
  for f in "$EFFNET_HEALTH"/{STOP}*.json; do
    [ -f "$f" ] && [ "$(effnet_field reason < "$f")" = app_error ] || continue
    rank=$(effnet_field rank < "$f") t=$(effnet_field time < "$f")
    if [ -z "$app_time" ] || [ "${t%.*}" -lt "$app_time" ]; then app_time=${t%.*} app_rank=$rank; fi
  done
  # The first task srun reports failed: "srun: error: NODE: task(s) N[-M,...]: HOW".
  line=$(grep -m 1 -E '^srun: error: [^:]+: tasks? [0-9]' "$EFFNET_HEALTH/srun.err" 2>/dev/null)
  first=$(sed -nE 's/^srun: error: [^:]+: tasks? ([0-9]+).*/\1/p' <<< "$line")
  [ ! -f "$EFFNET_HEALTH/{STOP}$first.json" ] || why=$(effnet_field reason < "$EFFNET_HEALTH/{STOP}$first.json")
  # A signal, unless another rank failed first: srun then terminates the others with SIGTERM.
  if grep -qs '"reason": "signal"' "$EFFNET_HEALTH"/{STOP}*.json || [ "$1" -eq {EXIT_REQUEUE} ]; then
    if [ -z "$first" ] || [ "$why" = signal ] || [[ $line == *"exit code {EXIT_REQUEUE}" ]]; then effnet_signal_cause; return; fi
  fi
  # A lost node: srun says so, or sinfo; the other ranks' errors followed.
  f=$(sed -nE 's/^srun: error: Node failure on ([^ ]+).*/\1/p' "$EFFNET_HEALTH/srun.err" 2>/dev/null | head -n 1)
  f=${f:-$(effnet_down_node)}
  if [ -n "$f" ]; then effnet_lost_node "$f" "is down or not responding" "$2" "$first"; return; fi
  if [ -f "$EFFNET_HEALTH/{HANG}" ]; then
    t=$(effnet_field time < "$EFFNET_HEALTH/{HANG}")
    if [ -n "$app_time" ] && [ "$app_time" -le "$t" ]; then effnet_app_error "$app_rank"; return; fi
    cause=hang fault_rank=$(effnet_field rank < "$EFFNET_HEALTH/{HANG}")
    detail="watchdog: no progress for $(effnet_field stalled_s < "$EFFNET_HEALTH/{HANG}") s, $(effnet_field how < "$EFFNET_HEALTH/{HANG}"): $(effnet_field detail < "$EFFNET_HEALTH/{HANG}")"
    fault_rank=${fault_rank#null} fault_node=$(effnet_field node < "$EFFNET_HEALTH/{HANG}")
    effnet_check_node
    return
  fi
  # The rank the watchdog saw go quiet first, if it did so before the first error: it hung (stopped,
  # or its node did), and the others' collectives failed around it.
  read -r rank t seen < <(sort -n -k 2 "$EFFNET_HEALTH/stale" 2>/dev/null)
  if [ -n "$rank" ] && { [ -z "$app_time" ] || [ "$seen" -le "$app_time" ]; }; then
    cause=hang fault_rank=$rank fault_node=$(effnet_node_of "$rank")
    detail="its heartbeat stopped at $(date -d "@$t" +%T), seen by the watchdog at $(date -d "@$seen" +%T)"
    effnet_check_node
    return
  fi
  IFS=$'\t' read -r how ranks hb < <(effnet_culprits "${app_time:-$2}" "$stopped")
  if [ "$how" = "stale heartbeat" ]; then
    effnet_crash "${ranks%%,*}" "its heartbeat stopped first (${hb} at the ${app_time:+first error}${app_time:-end})"
    return
  fi
  if [ "$why" = app_error ]; then effnet_app_error "$first"; return; fi
  if [ -n "$first" ] && [ -z "$why" ]; then effnet_crash "$first" "srun: ${line#srun: error: }"; return; fi
  if [ -n "$app_rank" ]; then effnet_app_error "$app_rank"; return; fi
  if [ "$1" -eq {EXIT_BAD_INPUT} ]; then cause=app_error error="exit status {EXIT_BAD_INPUT}: bad input (see the task logs)"; return; fi
  IFS=$'\t' read -r how ranks hb < <(effnet_culprits "$2" "$stopped" -1)
  effnet_crash "${ranks%%,*}" "no stop record; ${ranks:+its heartbeat stopped first ($hb at the end)}"
}

# NODE: add it to the pending job's ExcNodeList while the partition keeps enough usable nodes.
effnet_exclude() {
  local old new usable i part=()
  old=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | tr ' ' '\n' | sed -n 's/^ExcNodeList=//p')
  case $old in '' | '(null)') new=$1 ;; *) new="$old,$1" ;; esac
  [ -z "${SLURM_JOB_PARTITION:-}" ] || part=(-p "$SLURM_JOB_PARTITION")
  usable=$(sinfo -h -N "${part[@]}" -o '%N %T' 2>/dev/null | awk -v ex=",$(scontrol show hostnames "$new" 2>/dev/null | paste -sd, -)," '
    index(ex, "," $1 ",") == 0 && $2 !~ /^(down|drain|fail)|\*$/ && !seen[$1]++ { n++ } END { print n + 0 }')
  if [ "$usable" -lt "${SLURM_JOB_NUM_NODES:-1}" ]; then
    effnet_warn "not excluding $1: partition ${SLURM_JOB_PARTITION:-?} would keep $usable usable node(s) for ${SLURM_JOB_NUM_NODES:-1}"
    return 0
  fi
  for ((i = 0; i < EFFNET_EXCLUDE_TRIES; i++)); do
    if scontrol update JobId="$SLURM_JOB_ID" ExcNodeList="$new" 2>/dev/null; then
      effnet_say "$1 excluded from the next attempts (ExcNodeList=$new)"
      return 0
    fi
    sleep 1
  done
  effnet_warn "could not exclude $1 (scontrol update JobId=$SLURM_JOB_ID ExcNodeList=$new failed)"
}

# STATUS [NODE]: requeue this job, then keep NODE out of its next attempts.
effnet_requeue() {
  trap '' TERM  # the requeue signals this script too: stay to exclude the node
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    effnet_warn "scontrol requeue $SLURM_JOB_ID failed"
    exit $(($1 == 0 ? 1 : $1))
  fi
  [ -z "${2:-}" ] || effnet_exclude "$2"
  exit 0
}

# STATUS: after srun. Classify, record, then requeue or end the job with the right status.
effnet_end() {
  local end used=0 budget=0 action=stop where=""
  step_end=$(date +%s.%3N)
  kill "$EFFNET_WATCHDOG" 2>/dev/null
  exec 3>&-
  wait "$EFFNET_WATCHDOG" "$EFFNET_TEE" 2>/dev/null
  end=$(date +%s.%3N)
  effnet_classify "$1" "$end"
  case $cause in
    preempted | time_limit) budget=$EFFNET_MAX_REQUEUES ;;
    rank_crash | hang | node_failure) budget=$EFFNET_MAX_FAULTS ;;
  esac
  if [ "$budget" -gt 0 ]; then used=$(effnet_used "$cause"); fi
  if [ "$used" -gt 0 ] && [ "$used" -le "$budget" ]; then action=requeue; fi
  effnet_record "$SLURM_JOB_ID" "$EFFNET_ATTEMPT" "$SLURM_JOB_NODELIST" "$EFFNET_START" "$end" "$EFFNET_RESUMED" "$1" "$action"
  rm -f "$EFFNET_HEALTH/attempt"
  [ -z "$fault_rank" ] || where=" rank $fault_rank${fault_node:+ on $fault_node}"
  case $cause in
    completed)
      effnet_say "completed: attempt $EFFNET_ATTEMPT${last_step:+ reached step $last_step}"
      exit 0 ;;
    app_error)
      effnet_warn "app_error${where:+:$where}: $(sed 's/\\"/"/g; s/\\\\/\\/g' <<< "${error:-exit status $1}"); not requeued"
      exit $(($1 == 0 ? 1 : $1)) ;;
    preempted | time_limit)
      if [ "$action" = requeue ]; then
        effnet_say "$cause: checkpointed on signal; requeue $used of $budget"
        effnet_requeue "$1"
      fi
      effnet_warn "$cause: checkpointed on signal, but the limit of $budget requeues is reached"
      exit "$1" ;;
  esac
  if [ "$action" = requeue ]; then
    effnet_say "$cause${last_step:+ at step $last_step}${where:+:$where} ($detail); fault requeue $used of $budget"
    effnet_requeue "$1" "$fault_node"
  fi
  effnet_warn "$cause${last_step:+ at step $last_step}${where:+:$where} ($detail); the limit of $budget fault requeues is reached"
  exit $(($1 == 0 ? 1 : $1))
}
'''
