"""The training loop: stages, steps, EMA, evaluation, checkpoints and preemption.

One `Trainer` owns the model, optimizer, EMA, data and checkpoints of a run. Everything that
decides what happens next (stage, image size, learning rate, data position) is derived from
the checkpointed `TrainState`, so a run stopped at any step boundary and resumed produces
the same weights as one that was never stopped.
"""
from __future__ import annotations

import math
import os
import time
from typing import Iterator

import tensorflow as tf

from effnet import dist
from effnet.core.config.model import ModelConfig
from effnet.core.config.train import TrainConfig
from effnet.core.dllogger import DLLogger
from effnet.data.pipeline import InputPipeline, StageAugment
from effnet.data.splits import open_data
from effnet.model.efficientnet import build_model
from effnet.train.checkpoint import Checkpointer, RngState, TrainState, build_optimizer_slots
from effnet.train.ema import ExponentialMovingAverage
from effnet.train.evaluate import evaluate_raw_and_ema, make_inference_fn
from effnet.train.health import Heartbeat, write_stop
from effnet.train.metrics import throughput
from effnet.train.optimizer import build_optimizer, current_learning_rate
from effnet.train.precision import policy_name
from effnet.core.exits import EXIT_REQUEUE, parse_signals
from effnet.train.preemption import PreemptionFlag
from effnet.core.stages import Stage, StageSchedule
from effnet.train.reporting import TrainReporter
from effnet.train.step import StepConfig, TrainStep


class Preempted(SystemExit):
    """Raised after the checkpoint is written; the process exits with EXIT_REQUEUE."""

    def __init__(self) -> None:
        super().__init__(EXIT_REQUEUE)


class Trainer:
    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, logger: DLLogger, with_eval: bool,
                 heartbeat: Heartbeat | None = None) -> None:
        self.cfg = cfg
        self.with_eval = with_eval
        # The CLI starts the heartbeat before building the trainer; without one, stop records are still written.
        self.heartbeat = heartbeat or Heartbeat(cfg.model_dir, dist.rank())
        self._last_save = time.monotonic()
        self._saved_step: int | None = None  # the global step of the newest checkpoint, once known
        self.world = dist.size()
        self.data = open_data(cfg, model_cfg, train=True, eval=with_eval, rank=dist.rank(), world=self.world)
        self.report = TrainReporter(logger, cfg.model_dir, cfg.tensorboard, is_chief=dist.rank() == 0)
        self.steps_per_epoch = cfg.steps_per_epoch or self.data.steps_per_epoch(self.world)
        self.schedule = StageSchedule.from_config(cfg)
        self.model = build_model(model_cfg, dtype_policy=policy_name(cfg.use_amp, cfg.amp_dtype),
                                 allreduce=dist.batch_norm_allreduce())
        self.optimizer = build_optimizer(cfg, self.world, self.steps_per_epoch)
        build_optimizer_slots(self.optimizer, self.model)
        self.step = TrainStep(self.model, self.optimizer, StepConfig(
            cfg.label_smoothing, cfg.weight_decay, cfg.grad_accum_steps, cfg.use_xla))
        self.ema = ExponentialMovingAverage(self.model, cfg.moving_average_decay) if cfg.moving_average_decay else None
        if cfg.use_xla:
            self._trace_stages()
        self.state = TrainState()
        objects = {"model": self.model, "optimizer": self.optimizer, "state": self.state,
                   "rng": RngState(self.model)}
        if self.ema is not None:
            objects["ema"] = self.ema
        self.checkpoints = Checkpointer(cfg.model_dir, objects, cfg.keep_checkpoints, dist.rank() == 0)
        self.infer = make_inference_fn(self.model, cfg.use_xla)
        self._augment_and_mix = tf.function(InputPipeline.augment_and_mix)

    # ------------------------------------------------------------------ setup

    def restore_or_init(self) -> str | None:
        restored = self.checkpoints.restore(self.cfg.resume)
        # Rank 0's state wins: fresh runs start identical, resumed ones stay identical.
        self.step.broadcast_initial_state()
        dist.broadcast_variables(list(self.state.variables) + (list(self.ema.variables) if self.ema else []))
        if restored:
            self._saved_step = int(self.state.global_step.numpy())
        return restored

    # ------------------------------------------------------------------ training

    def _stage_augment(self, stage: Stage) -> StageAugment:
        return StageAugment(self.cfg.augmenter_name, self.cfg.raug_num_layers, stage.raug_magnitude,
                            stage.mixup_alpha, stage.cutmix_alpha)

    def _trace_stages(self) -> None:
        """Trace every stage's step now, in stage order, before anything else is traced.

        The persistent XLA cache (`effnet.core.xla_cache`) keys a compiled step by its function's
        name, which carries a process-wide trace counter. Traced here, the same in every attempt
        (fresh, or resumed in any stage), each stage's step keeps its name and finds the executable
        an earlier attempt compiled; a stage change compiles once per experiment."""
        for stage in self.schedule.stages():
            self.step.trace(*self.data.step_inputs(stage.image_size, self._stage_augment(stage)))

    def _batches(self, epoch: int) -> Iterator[tuple[tf.Tensor, tf.Tensor, dict]]:
        """(images, labels, features) of the rest of `epoch`; deferred augmentation and mixing done here."""
        stage = self.schedule.at_epoch(epoch)
        augment = self._stage_augment(stage)
        start_step = int(self.state.step_in_epoch.numpy())
        start_record = int(self.state.next_record.numpy())
        dataset = self.data.train(epoch, stage.image_size, augment, self.world, start_step=start_step,
                                  start_record=start_record, steps=self.steps_per_epoch)
        for features, labels in dataset:
            images = self._augment_and_mix(features, augment) if self.cfg.defer_img_mixing else features["image"]
            yield images, labels, features

    def _preemption_requested(self, flag: PreemptionFlag) -> bool:
        """True on every rank as soon as any rank received a checkpoint signal."""
        local = tf.constant(1.0 if flag.requested else 0.0)
        return float(dist.allreduce_sum(local, "preempt")) > 0

    def _save(self) -> str | None:
        """Checkpoint the current step (rank 0 writes, no collective); a save is progress for the watchdog."""
        step = int(self.state.global_step.numpy())
        path = self.checkpoints.save(step)
        self.heartbeat.advance()
        self._last_save = time.monotonic()
        self._saved_step = step
        return path

    def _periodic_save_due(self) -> bool:
        """--checkpoint_every_min, by rank 0's clock: only rank 0 writes, so the other ranks need not agree."""
        every_s = self.cfg.checkpoint_every_min * 60
        return every_s > 0 and self.checkpoints.is_chief and time.monotonic() - self._last_save >= every_s

    def _checkpoint_and_exit(self, flag: PreemptionFlag, progress) -> None:
        if progress is not None:
            progress.close()
        # Rank 0's own signal time, else when it learned of another rank's.
        self.heartbeat.mark("signal", flag.received_at)
        step = int(self.state.global_step.numpy())
        # Stopped before a step: the newest checkpoint (restored, or the epoch's) already holds this state.
        checkpoint = (self._save() if step != self._saved_step else None) or self.checkpoints.prefix(step)
        self.heartbeat.set_step(step)
        # Every rank says why it stops (one that did not get the signal itself names none), and rank 0
        # logs it, before the barrier: the first rank to exit makes srun --kill-on-bad-exit end the
        # others, so no rank may exit before every record is written.
        write_stop(self.heartbeat, "signal", signal=flag.received.name if flag.received else None,
                   checkpoint=checkpoint)
        self.report.log((), {"comment": "checkpointed on signal, exiting for requeue", "checkpoint": checkpoint,
                             "exit_code": EXIT_REQUEUE, **self.state.as_dict()})
        self.heartbeat.mark("stop_record")
        dist.barrier()
        raise Preempted()

    def _log_progress(self, epoch: int, loss_sum: float, correct: float, seen: int, steps: int, seconds: float) -> None:
        totals = dist.allreduce_sum(tf.constant([loss_sum, correct, float(seen)]), "progress").numpy()
        global_step = int(self.state.global_step.numpy())
        record = {
            "training_loss": float(totals[0] / max(steps * self.world, 1)),
            "training_accuracy_top_1": float(totals[1] / max(totals[2], 1)),
            "learning_rate": current_learning_rate(self.optimizer),
            "examples/second": throughput(int(totals[2]), seconds),
            "skipped_records": int(self.state.skipped_records.numpy()),
        }
        self.report.progress(epoch, int(self.state.step_in_epoch.numpy()), global_step, record)

    def train_epoch(self, epoch: int, flag: PreemptionFlag) -> list[float]:
        """Run the rest of `epoch`; returns the per-interval throughputs."""
        rates = []
        loss_sum, correct, seen, steps = 0.0, 0.0, 0, 0
        interval_start = time.perf_counter()
        segment_skipped_base = int(self.state.skipped_records.numpy())
        global_step = int(self.state.global_step.numpy())
        progress = self.report.progress_bar(self.steps_per_epoch, int(self.state.step_in_epoch.numpy()), epoch)
        for index, (images, labels, features) in enumerate(self._batches(epoch)):
            if index == 0:
                if "first_batch" not in self.heartbeat.timeline:
                    self.heartbeat.mark("first_batch")
                # Before the first step too: an epoch's pipeline start (and at a new stage the step's first
                # trace) takes seconds, tens of them on a loaded node, longer than a scheduler's grace time.
                if self._preemption_requested(flag):
                    self._checkpoint_and_exit(flag, progress)
            loss, batch_correct = self.step(images, labels)
            if self.ema is not None:
                self.ema.update()
            self.state.global_step.assign_add(1)
            self.state.step_in_epoch.assign_add(1)
            self.state.next_record.assign(tf.reduce_max(features["index"]) + 1)
            self.state.skipped_records.assign(segment_skipped_base + features["skipped"][-1])
            global_step += 1
            self.heartbeat.set_step(global_step)
            loss = float(loss)   # the sync this loop always had: the step's loss, on the host
            if not math.isfinite(loss):
                # A diverged run stays diverged: an application error, not something a requeue fixes.
                raise FloatingPointError(f"training loss is {loss} at step {global_step}")
            self.heartbeat.advance()
            if "first_step" not in self.heartbeat.timeline:
                self.heartbeat.mark("first_step")  # after the loss reached the host: the step is done
            loss_sum += loss
            correct += float(batch_correct)
            seen += int(labels.shape[0])
            steps += 1
            if progress is not None:
                progress.update(1)
            step_in_epoch = int(self.state.step_in_epoch.numpy())
            if step_in_epoch % self.cfg.log_steps == 0 or step_in_epoch == self.steps_per_epoch:
                seconds = time.perf_counter() - interval_start
                self._log_progress(epoch, loss_sum, correct, seen, steps, seconds)
                rates.append(throughput(seen * self.world, seconds))
                loss_sum, correct, seen, steps = 0.0, 0.0, 0, 0
                interval_start = time.perf_counter()
            if self._preemption_requested(flag):
                self._checkpoint_and_exit(flag, progress)
            if step_in_epoch < self.steps_per_epoch and self._periodic_save_due():
                # Not at an epoch's last step, before its counters move on: fit's per-epoch save comes
                # there, or else the next epoch's first step saves.
                self._save()
        if progress is not None:
            progress.close()
        self.state.epoch.assign(epoch + 1)
        self.state.step_in_epoch.assign(0)
        self.state.next_record.assign(0)
        return rates

    def evaluate(self) -> list[dict]:
        """Raw and (with EMA) averaged weights on the whole eval split, at the eval size."""
        return evaluate_raw_and_ema(self.infer, self.ema, lambda: self.heartbeat.counting(
            self.data.eval(self.cfg.eval_img_size, self.cfg.eval_batch_size)))

    def fit(self) -> dict:
        """Train to max_epochs (resuming if a checkpoint exists); returns the final summary."""
        # Listen before saying that training starts: a signal after the PARAMETER line is never lost.
        flag = PreemptionFlag(parse_signals(self.cfg.checkpoint_signals))
        restored = self.restore_or_init()
        self.heartbeat.mark("restored")
        start = self.state.as_dict()
        self.heartbeat.set_step(start["global_step"])
        self.report.log("PARAMETER", {"resumed_from": restored or "", "steps_per_epoch": self.steps_per_epoch,
                                      "stages": [vars(s) for s in self.schedule.stages()], **start})
        rates: list[float] = []
        train_start = time.perf_counter()
        try:
            for epoch in range(start["epoch"], self.cfg.max_epochs):
                rates += self.train_epoch(epoch, flag)
                last = epoch + 1 == self.cfg.max_epochs
                if (epoch + 1) % self.cfg.save_checkpoint_freq == 0 or last:
                    self._save()
                if (self.with_eval and not self.cfg.skip_eval and not last
                        and (epoch + 1) % self.cfg.num_epochs_between_eval == 0):
                    self.report.evaluation(epoch + 1, int(self.state.global_step.numpy()), self.evaluate())
        finally:
            flag.restore()
        summary = self._final_summary(rates, time.perf_counter() - train_start)
        write_stop(self.heartbeat, "completed")
        return summary

    def weights_in_sync(self) -> bool:
        """Whether every rank holds the same weights (a cheap checksum, allgathered)."""
        checksum = tf.add_n([tf.reduce_sum(tf.abs(tf.cast(v, tf.float64))) for v in self.model.trainable_variables])
        gathered = dist.allgather(tf.reshape(checksum, [1])).numpy()
        return bool((gathered == gathered[0]).all())

    def _final_summary(self, rates: list[float], seconds: float) -> dict:
        # The reference averages the interval throughputs after dropping the first 10%.
        steady = rates[len(rates) // 10:] if rates else []
        summary = {"total_training_seconds": seconds, "weights_in_sync_across_ranks": self.weights_in_sync()}
        if steady:
            rate = sum(steady) / len(steady)
            summary.update({"avg_exp_per_second_training": rate,
                            "avg_exp_per_second_training_per_GPU": rate / self.world})
        results = self.evaluate() if self.with_eval else []
        for result in results:
            self.report.log((), {**result, **summary})
        if not results:
            self.report.log((), {"comment": "training finished", **summary})
        if self.cfg.export_savedmodel:
            self._export(results)
        return {"results": results, **summary}

    def _export(self, results: list[dict]) -> None:
        """Export the better weights (by top-1; raw when not evaluated) as a SavedModel."""
        use_ema = len(results) == 2 and results[1]["eval_accuracy_top_1"] > results[0]["eval_accuracy_top_1"]
        if dist.rank() != 0:
            return
        path = os.path.join(self.cfg.model_dir, "savedmodel")
        if use_ema:
            with self.ema.swapped():
                self.model.export(path, verbose=False)
        else:
            self.model.export(path, verbose=False)
        self.report.log((), {"comment": "exported SavedModel", "path": path,
                             "weights": "EMA" if use_ema else "original"})
