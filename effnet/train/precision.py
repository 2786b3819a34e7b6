"""Numeric precision: fp32, TF32 on Ampere+, or mixed float16/bfloat16 compute."""
from __future__ import annotations

import keras
import tensorflow as tf


def policy_name(use_amp: bool, amp_dtype: str) -> str:
    if not use_amp:
        return "float32"
    return "mixed_float16" if amp_dtype == "float16" else "mixed_bfloat16"


def configure_precision(use_amp: bool, amp_dtype: str, use_tf32: bool) -> str:
    """Set the global Keras dtype policy and the TF32 switch; returns the policy name.

    Must run before the model is built.
    """
    name = policy_name(use_amp, amp_dtype)
    keras.mixed_precision.set_global_policy(name)
    tf.config.experimental.enable_tensor_float_32_execution(use_tf32)
    return name
