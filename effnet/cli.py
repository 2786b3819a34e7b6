"""The `python -m effnet` command line, generated from `TrainConfig` and run through `fire`.

Every `TrainConfig` field is a keyword flag (`--use_amp`, `--nouse_amp`, `--use_amp=false`).
Bad input is reported as one line on stderr with exit status 2.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from typing import TYPE_CHECKING

from effnet.core.errors import ConfigError
from effnet.core.config.train import TRAIN_MODES, TrainConfig
from effnet.core.exits import EXIT_BAD_INPUT

if TYPE_CHECKING:
    from effnet.train.health import Heartbeat



def run(config: TrainConfig) -> dict | None:
    """Dispatch one run; returns the training summary in train modes.

    A train mode beats a heartbeat and, on an exception (a ConfigError too), writes this rank's
    `app_error` stop record before re-raising: the batch script must not requeue a bug forever."""
    if config.mode not in TRAIN_MODES:
        return _dispatch(config, None)
    from effnet.core.health import launched_rank
    from effnet.train.health import Heartbeat, write_app_error

    # The launcher's rank until Horovod is up: an error before that is still recorded under it.
    heartbeat = Heartbeat(config.model_dir, launched_rank(os.environ))
    try:
        return _dispatch(config, heartbeat)
    except Exception as err:
        write_app_error(heartbeat, err)
        raise
    finally:
        heartbeat.stop()


def _dispatch(config: TrainConfig, heartbeat: Heartbeat | None) -> dict | None:
    """Run `config.mode`; heavy imports happen here so `--help` stays fast."""
    # Imported late: TensorFlow takes seconds to import and is not needed to parse flags.
    from effnet.core.config.model import apply_mparams, load_model_config

    model_cfg = apply_mparams(load_model_config(config.cfg), config.mparams)
    if config.mode == "summary":
        from effnet.summary import summary_text

        print(summary_text(model_cfg))
        return None

    from effnet import dist
    from effnet.core.dllogger import DLLogger
    from effnet.data.splits import check_data
    from effnet.train.precision import configure_tf32

    # Missing data is found before log.json is opened: a bad --data_dir leaves only the stop record.
    check_data(config, train=config.mode in TRAIN_MODES, eval=config.mode in ("train_and_eval", "eval"))

    if config.seed is not None:
        import keras
        import tensorflow as tf

        # A seed means a reproducible run: same data, same init, deterministic kernels.
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
    # The one place that decides: the launcher announced several ranks, or this process runs alone.
    dist.init(horovod=dist.launched_ranks(os.environ) > 1, memory_limit_mb=config.memory_limit)
    if config.use_xla and dist.size() > 1 and model_cfg.sync_batch_norm and config.mode in (*TRAIN_MODES, "benchmark"):
        raise ConfigError("--use_xla with several ranks cannot compile the cross-replica BatchNorm allreduce; "
                          "pass --mparams sync_batch_norm=false (per-rank BatchNorm statistics)")
    configure_tf32(config.use_tf32)
    log_path = os.path.join(config.model_dir, config.log_filename)
    with DLLogger(log_path, rank=dist.rank()) as logger:
        logger.standard_metadata()
        logger.log("PARAMETER", {**config.as_dict(), "model": dataclasses.asdict(model_cfg),
                                 "world_size": dist.size(), "controller": dist.controller(),
                                 "accelerator": dist.accelerator()})
        if config.mode == "benchmark":
            from effnet.benchmark import run_benchmark

            run_benchmark(model_cfg, config, logger)
        elif config.mode in TRAIN_MODES:
            from effnet.train.loop import Trainer

            heartbeat.rank = dist.rank()
            heartbeat.start()
            return Trainer(config, model_cfg, logger, config.mode == "train_and_eval", heartbeat).fit()
        elif config.mode == "eval":
            from effnet.inference import evaluate_checkpoint

            evaluate_checkpoint(config, model_cfg, logger)
        else:
            from effnet.predict import run_predict

            run_predict(config, model_cfg, logger)
    return None


def _help_text() -> str:
    lines = [
        "Train, evaluate and inspect EfficientNet v1 models.",
        "",
        "usage: python -m effnet --mode MODE --cfg CFG [--flag VALUE ...]",
        "       booleans: --use_amp, --nouse_amp, --use_amp=true|false",
        "",
        "flags:",
    ]
    for f in dataclasses.fields(TrainConfig):
        lines.append(f"  --{f.name:<24} {f.metadata['help']} (default: {f.default!r})")
    return "\n".join(lines)


def main(**flags) -> None:
    try:
        config = TrainConfig.from_flags(**flags)
        run(config)
    except ConfigError as err:
        print(f"effnet: error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


main.__signature__ = inspect.Signature(
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
     for f in dataclasses.fields(TrainConfig)]
    + [inspect.Parameter("flags", inspect.Parameter.VAR_KEYWORD)]
)


def entrypoint(argv: list[str] | None = None) -> None:
    import fire

    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in args):
        print(_help_text())
        return

    fire.Fire(main, command=args, name="python -m effnet")
