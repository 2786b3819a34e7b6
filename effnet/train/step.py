"""Our own training step (not Keras `fit`): forward/backward, gradient accumulation, allreduce, update.

The update takes `grad_accum_steps * micro_batch` examples, splits them into micro-batches,
averages their gradients, then allreduces and applies once. That equals one step on the
large batch from the very first update (the reference's first update used one micro-batch).
Forward/backward may be XLA-compiled; the Horovod allreduce stays outside the compiled
function, since XLA cannot compile Horovod ops.
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from effnet import dist
from effnet.model import every_layer


@dataclasses.dataclass(frozen=True)
class StepConfig:
    label_smoothing: float = 0.1
    weight_decay: float = 0.0
    grad_accum_steps: int = 1
    use_xla: bool = False


def decayed_variables(model: keras.Model) -> list:
    """Kernels and biases of Conv2D and Dense layers: what the reference's L2 regulariser covered.

    BatchNorm parameters and depthwise kernels are not decayed.
    """
    out = []
    for layer in every_layer(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(
            layer, keras.layers.DepthwiseConv2D
        ):
            out.extend(w for w in layer.trainable_weights)
    return out


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor, label_smoothing: float) -> tf.Tensor:
    """Per-example softmax cross-entropy with label smoothing; `labels` are (soft) one-hot."""
    labels = tf.cast(labels, tf.float32)
    logits = tf.cast(logits, tf.float32)
    if label_smoothing > 0:
        num_classes = tf.cast(tf.shape(labels)[-1], tf.float32)
        labels = labels * (1.0 - label_smoothing) + label_smoothing / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)


class TrainStep:
    """Callable `step(images, labels) -> (loss, top1_correct)`; updates the model in place."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, cfg: StepConfig) -> None:
        self.model = model
        self.optimizer = optimizer
        self.cfg = cfg
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self._decayed = decayed_variables(model)
        # One trace per exact input shape (one per resolution stage), never a shape-relaxed one: after a
        # stage change, a relaxed retrace runs other kernels than the exact trace a run resumed inside
        # that stage makes, and their gradients differ in the last bits, so resume would not be exact.
        self._fwd_bwd = tf.function(self._forward_backward, jit_compile=cfg.use_xla)
        self._update = tf.function(self._accumulate_and_apply)

    def _forward_backward(self, images, labels):
        images = tf.cast(images, tf.float32)   # the input pipeline hands over uint8 unless it mixed images
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = tf.reduce_mean(cross_entropy(labels, logits, self.cfg.label_smoothing))
            if self.cfg.weight_decay > 0:
                loss += self.cfg.weight_decay * tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, tf.float32)))
                                                          for w in self._decayed])
            scaled = self.optimizer.scale_loss(loss) if self.loss_scaled else loss
        grads = tape.gradient(scaled, self.model.trainable_variables)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)), tf.float32))
        return loss, correct, grads

    def _accumulate_and_apply(self, images, labels):
        n = self.cfg.grad_accum_steps
        micro = tf.shape(images)[0] // n
        loss_sum = tf.constant(0.0)
        correct_sum = tf.constant(0.0)
        grad_sum = None
        for i in range(n):  # unrolled: n is small and static
            loss, correct, grads = self._fwd_bwd(images[i * micro:(i + 1) * micro], labels[i * micro:(i + 1) * micro])
            loss_sum += loss
            correct_sum += correct
            grad_sum = grads if grad_sum is None else [a + b for a, b in zip(grad_sum, grads)]
        grads = grad_sum if n == 1 else [g / n for g in grad_sum]
        grads = dist.allreduce_gradients(grads)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss_sum / n, correct_sum

    def trace(self, images: tf.TensorSpec, labels: tf.TensorSpec) -> None:
        """Trace the update for one exact input now; the step that later gets that input reuses it."""
        self._update.get_concrete_function(images, labels)

    def broadcast_initial_state(self, root_rank: int = 0) -> None:
        """Build the optimizer's slots, then make model and optimizer state equal to `root_rank`'s."""
        self.optimizer.build(self.model.trainable_variables)
        dist.broadcast_variables(list(self.model.variables) + list(self.optimizer.variables), root_rank)

    def __call__(self, images, labels):
        batch = int(images.shape[0])
        if batch % self.cfg.grad_accum_steps:
            raise ValueError(f"batch {batch} is not divisible by grad_accum_steps {self.cfg.grad_accum_steps}")
        return self._update(images, labels)
