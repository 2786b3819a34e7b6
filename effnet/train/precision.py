"""Numeric precision: fp32, TF32 on Ampere+, or mixed float16/bfloat16 compute."""
from __future__ import annotations

import tensorflow as tf


def policy_name(use_amp: bool, amp_dtype: str) -> str:
    if not use_amp:
        return "float32"
    return "mixed_float16" if amp_dtype == "float16" else "mixed_bfloat16"


def configure_tf32(use_tf32: bool) -> None:
    """TensorFlow's TF32 switch is process-wide; the entry point sets it once, before any op runs.

    The dtype policy is not global: `build_model(dtype_policy=policy_name(...))` takes it."""
    tf.config.experimental.enable_tensor_float_32_execution(use_tf32)
