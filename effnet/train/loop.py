"""The training loop: stages, steps, EMA, logging, evaluation, checkpoints and preemption.

One `Trainer` owns the model, optimizer, EMA, data and checkpoints of a run. Everything that
decides what happens next (stage, image size, learning rate, data position) is derived from
the checkpointed `TrainState`, so a run stopped at any step boundary and resumed produces
the same weights as one that was never stopped.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterator


import tensorflow as tf

from effnet import dist
from effnet.core.errors import ConfigError
from effnet.core.config.model import ModelConfig
from effnet.core.config.train import TrainConfig
from effnet.data.pipeline import InputPipeline, PipelineConfig, StageAugment
from effnet.data.readers import RecordSet, open_split
from effnet.core.dllogger import DLLogger
from effnet.model.efficientnet import build_model
from effnet.train.checkpoint import Checkpointer, RngState, TrainState, build_optimizer_slots
from effnet.train.ema import ExponentialMovingAverage
from effnet.train.evaluate import evaluate, make_inference_fn
from effnet.train.metrics import throughput
from effnet.train.optimizer import build_optimizer, current_learning_rate
from effnet.core.exits import EXIT_REQUEUE, parse_signals
from effnet.train.preemption import PreemptionFlag
from effnet.core.stages import StageSchedule
from effnet.train.step import StepConfig, TrainStep


class Preempted(SystemExit):
    """Raised after the checkpoint is written; the process exits with EXIT_REQUEUE."""

    def __init__(self) -> None:
        super().__init__(EXIT_REQUEUE)


def _check_classes(data: RecordSet, model_cfg: ModelConfig) -> None:
    if data.num_classes is not None and data.num_classes > model_cfg.num_classes:
        raise ConfigError(f"the dataset has {data.num_classes} classes but the model {model_cfg.num_classes}; "
                          f"pass --mparams num_classes={data.num_classes}")


def open_data(cfg: TrainConfig, model_cfg: ModelConfig, train: bool, eval: bool) -> InputPipeline:
    rank, world = dist.rank(), dist.size()
    train_set = open_split(cfg.dataset, cfg.data_dir, "train", rank, world) if train else None
    eval_set = open_split(cfg.dataset, cfg.data_dir, "eval", rank, world) if eval else None
    for split in (train_set, eval_set):
        if split is not None:
            _check_classes(split, model_cfg)
    return InputPipeline(train_set, eval_set, PipelineConfig(
        batch_size=cfg.train_batch_size * cfg.grad_accum_steps, num_classes=model_cfg.num_classes,
        seed=cfg.seed or 0, rank=rank, threads=cfg.data_threads, defer_img_mixing=cfg.defer_img_mixing,
        min_crop_area=cfg.min_crop_area, crop_padding=cfg.crop_padding, random_flip=cfg.random_flip))


def evaluate_raw_and_ema(infer, ema: ExponentialMovingAverage | None, eval_dataset, **extra) -> list[dict]:
    """Evaluate the raw weights and, with EMA, the averaged ones; `eval_dataset()` makes a fresh pass."""
    results = [{"comment": "eval using original weights", **extra, **evaluate(infer, eval_dataset())}]
    if ema is not None:
        with ema.swapped():
            results.append({"comment": "eval using EMA weights", **extra, **evaluate(infer, eval_dataset())})
    return results


class Trainer:
    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, logger: DLLogger, with_eval: bool) -> None:
        self.cfg = cfg
        self.logger = logger
        self.with_eval = with_eval
        self.data = open_data(cfg, model_cfg, train=True, eval=with_eval)
        self.world = dist.size()
        self.steps_per_epoch = cfg.steps_per_epoch or self.data.steps_per_epoch(self.world)
        self.schedule = StageSchedule.from_config(cfg)
        self.model = build_model(model_cfg)
        self.optimizer = build_optimizer(cfg, self.world, self.steps_per_epoch)
        build_optimizer_slots(self.optimizer, self.model)
        self.step = TrainStep(self.model, self.optimizer, StepConfig(
            cfg.label_smoothing, cfg.weight_decay, cfg.grad_accum_steps, cfg.use_xla))
        self.ema = ExponentialMovingAverage(self.model, cfg.moving_average_decay) if cfg.moving_average_decay else None
        self.state = TrainState()
        objects = {"model": self.model, "optimizer": self.optimizer, "state": self.state,
                   "rng": RngState(self.model)}
        if self.ema is not None:
            objects["ema"] = self.ema
        self.checkpoints = Checkpointer(cfg.model_dir, objects, cfg.keep_checkpoints, dist.rank() == 0)
        self.infer = make_inference_fn(self.model, cfg.use_xla)
        self._augment_and_mix = tf.function(InputPipeline.augment_and_mix)
        self.summary_writer = (tf.summary.create_file_writer(os.path.join(cfg.model_dir, "tensorboard"))
                               if cfg.tensorboard and dist.rank() == 0 else None)

    # ------------------------------------------------------------------ setup

    def restore_or_init(self) -> str | None:
        restored = self.checkpoints.restore(self.cfg.resume)
        # Rank 0's state wins: fresh runs start identical, resumed ones stay identical.
        self.step.broadcast_initial_state()
        dist.broadcast_variables(list(self.state.variables) + (list(self.ema.variables) if self.ema else []))
        return restored

    # ------------------------------------------------------------------ training

    def _batches(self, epoch: int) -> Iterator[tuple[tf.Tensor, tf.Tensor, dict]]:
        """(images, labels, features) of the rest of `epoch`; deferred augmentation and mixing done here."""
        stage = self.schedule.at_epoch(epoch)
        augment = StageAugment(self.cfg.augmenter_name, self.cfg.raug_num_layers, stage.raug_magnitude,
                               stage.mixup_alpha, stage.cutmix_alpha)
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

    def _checkpoint_and_exit(self) -> None:
        path = self.checkpoints.save(int(self.state.global_step.numpy()))
        dist.barrier()
        self.logger.log((), {"comment": "checkpointed on signal, exiting for requeue", "checkpoint": path or "",
                             "exit_code": EXIT_REQUEUE, **self.state.as_dict()})
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
        self.logger.log((epoch, int(self.state.step_in_epoch.numpy())), record)
        if self.summary_writer is not None:
            with self.summary_writer.as_default(step=global_step):
                for key in ("training_loss", "training_accuracy_top_1", "learning_rate", "examples/second"):
                    tf.summary.scalar(key.replace("/", "_per_"), record[key])

    def train_epoch(self, epoch: int, flag: PreemptionFlag) -> list[float]:
        """Run the rest of `epoch`; returns the per-interval throughputs."""
        rates = []
        loss_sum, correct, seen, steps = 0.0, 0.0, 0, 0
        interval_start = time.perf_counter()
        segment_skipped_base = int(self.state.skipped_records.numpy())
        progress = _progress_bar(self.steps_per_epoch, int(self.state.step_in_epoch.numpy()), epoch)
        for images, labels, features in self._batches(epoch):
            loss, batch_correct = self.step(images, labels)
            if self.ema is not None:
                self.ema.update()
            self.state.global_step.assign_add(1)
            self.state.step_in_epoch.assign_add(1)
            self.state.next_record.assign(tf.reduce_max(features["index"]) + 1)
            self.state.skipped_records.assign(segment_skipped_base + features["skipped"][-1])
            loss_sum += float(loss)
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
                if progress is not None:
                    progress.close()
                self._checkpoint_and_exit()
        if progress is not None:
            progress.close()
        self.state.epoch.assign(epoch + 1)
        self.state.step_in_epoch.assign(0)
        self.state.next_record.assign(0)
        return rates

    def evaluate_both(self, image_size: int) -> list[dict]:
        return evaluate_raw_and_ema(self.infer, self.ema, lambda: self.data.eval(image_size, self.cfg.eval_batch_size))

    def _log_eval(self, epoch: int, results: list[dict]) -> None:
        for result in results:
            self.logger.log((epoch,), result)
        if self.summary_writer is not None:
            with self.summary_writer.as_default(step=int(self.state.global_step.numpy())):
                for result in results:
                    prefix = "ema_" if "EMA" in result["comment"] else ""
                    for key in ("eval_loss", "eval_accuracy_top_1", "eval_accuracy_top_5"):
                        tf.summary.scalar(prefix + key, result[key])

    def fit(self) -> dict:
        """Train to max_epochs (resuming if a checkpoint exists); returns the final summary."""
        restored = self.restore_or_init()
        start = self.state.as_dict()
        self.logger.log("PARAMETER", {"resumed_from": restored or "", "steps_per_epoch": self.steps_per_epoch,
                                      "stages": [vars(s) for s in self.schedule.stages()], **start})
        flag = PreemptionFlag(parse_signals(self.cfg.checkpoint_signals))
        rates: list[float] = []
        train_start = time.perf_counter()
        try:
            for epoch in range(start["epoch"], self.cfg.max_epochs):
                rates += self.train_epoch(epoch, flag)
                last = epoch + 1 == self.cfg.max_epochs
                if (epoch + 1) % self.cfg.save_checkpoint_freq == 0 or last:
                    self.checkpoints.save(int(self.state.global_step.numpy()))
                if (self.with_eval and not self.cfg.skip_eval and not last
                        and (epoch + 1) % self.cfg.num_epochs_between_eval == 0):
                    self._log_eval(epoch + 1, self.evaluate_both(self.cfg.eval_img_size))
        finally:
            flag.restore()
        return self._final_summary(rates, time.perf_counter() - train_start)

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
        results = self.evaluate_both(self.cfg.eval_img_size) if self.with_eval else []
        for result in results:
            self.logger.log((), {**result, **summary})
        if not results:
            self.logger.log((), {"comment": "training finished", **summary})
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
        self.logger.log((), {"comment": "exported SavedModel", "path": path,
                             "weights": "EMA" if use_ema else "original"})


def _progress_bar(total: int, initial: int, epoch: int):
    """A tqdm bar on interactive rank-0 runs; None in logs and batch jobs."""
    if dist.rank() != 0 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch}", unit="step", leave=False)




def restore_for_inference(cfg: TrainConfig, model_cfg: ModelConfig):
    """Model (and EMA) from the newest checkpoint, for eval and predict; (model, ema, path)."""
    model = build_model(model_cfg)
    ema = ExponentialMovingAverage(model, cfg.moving_average_decay) if cfg.moving_average_decay else None
    objects = {"model": model, **({"ema": ema} if ema is not None else {})}
    checkpoints = Checkpointer(cfg.model_dir, objects, cfg.keep_checkpoints, is_chief=False)
    if cfg.resume == "never" and not cfg.allow_random_weights:
        raise ConfigError(f"--mode {cfg.mode} with --resume never needs --allow_random_weights")
    path = checkpoints.restore("auto" if cfg.allow_random_weights else "must", partial=True)
    return model, ema, path


def evaluate_checkpoint(cfg: TrainConfig, model_cfg: ModelConfig, logger: DLLogger) -> list[dict]:
    """`--mode eval`: the newest checkpoint's raw and (with EMA) averaged weights on the eval split."""
    data = open_data(cfg, model_cfg, train=False, eval=True)
    model, ema, path = restore_for_inference(cfg, model_cfg)
    infer = make_inference_fn(model, cfg.use_xla)
    results = evaluate_raw_and_ema(infer, ema, lambda: data.eval(cfg.eval_img_size, cfg.eval_batch_size),
                                   checkpoint=path or "random weights")
    for result in results:
        logger.log((), result)
    return results
