"""The part of TensorFlow 1's API that disentanglement_lib's loss code calls, run eagerly on
NumPy arrays in float64, so that its own functions (``methods/unsupervised/vae.py``,
``methods/shared/losses.py``) compute the VAE family's losses here without TensorFlow.

Each op is the NumPy expression of TensorFlow's documented definition
(``sigmoid_cross_entropy_with_logits``: max(x, 0) − x·z + log(1 + e^−|x|)). Random ops give
the draws queued in ``DRAWS`` (ours, replayed); the graph-building API (variable scopes,
summaries, collections) does nothing; ``train.get_global_step`` reads ``STEP``.
"""

from __future__ import annotations

import contextlib
import types

import numpy as np
from scipy.special import logsumexp

DRAWS: dict[str, list[np.ndarray]] = {"random_normal": [], "random_shuffle": []}
STEP = [0]
NAMED: dict[str, np.ndarray] = {}  # every op given a name, by its name: what TF would log


class Tensor(np.ndarray):
    """An array with TensorFlow's shape accessors."""

    def get_shape(self) -> TensorShape:
        return TensorShape(self.shape)


class TensorShape(tuple):
    def as_list(self) -> list[int]:
        return list(self)


def tensor(value) -> Tensor:
    return np.asarray(value, dtype=np.float64).view(Tensor)


def _op(function):
    def op(*args, name=None, **kwargs):
        out = tensor(function(*args, **kwargs))
        if name is not None:
            NAMED[name] = out
        return out

    return op


def _reduction(function):
    return _op(
        lambda x, axis=None, keepdims=False: function(x, axis=_axis(axis), keepdims=keepdims)
    )


reduce_mean, reduce_sum = _reduction(np.mean), _reduction(np.sum)
reduce_logsumexp = _reduction(logsumexp)
square, exp, log = _op(np.square), _op(np.exp), _op(np.log)
expand_dims = _op(lambda x, axis: np.expand_dims(x, axis))
add, subtract = _op(np.add), _op(np.subtract)
stack = _op(lambda values, axis=0: np.stack(values, axis))
reshape = _op(lambda x, shape: np.reshape(x, shape))
diag_part = _op(np.diagonal)
diag = _op(np.diag)
matrix_diag = _op(lambda x: np.einsum("bi,ij->bij", x, np.eye(x.shape[-1])))
clip_by_value = _op(np.clip)
constant = _op(lambda value: value)
to_float = _op(lambda x: x)
shape = np.shape


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def random_normal(shape, mean=0.0, stddev=1.0, name=None):
    return tensor(DRAWS["random_normal"].pop(0)).reshape(shape) * stddev + mean


def random_shuffle(values, name=None):
    return tensor(np.asarray(values)[DRAWS["random_shuffle"].pop(0)])


def _sigmoid_cross_entropy_with_logits(labels, logits):
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


def _softmax(logits, axis=-1):
    shifted = np.exp(logits - np.max(logits, axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


nn = types.SimpleNamespace(
    sigmoid_cross_entropy_with_logits=_op(_sigmoid_cross_entropy_with_logits),
    sigmoid=_op(lambda x: 1 / (1 + np.exp(-x))),
    tanh=_op(np.tanh),
    softmax=_op(_softmax),
)
math = types.SimpleNamespace(minimum=_op(np.minimum), abs=_op(np.abs))
train = types.SimpleNamespace(get_global_step=lambda: STEP[0])
estimator = types.SimpleNamespace(ModeKeys=types.SimpleNamespace(TRAIN="train", EVAL="eval"))
summary = types.SimpleNamespace(scalar=lambda *args, **kwargs: None)
metrics = types.SimpleNamespace(mean=lambda value: value)
GraphKeys = types.SimpleNamespace(UPDATE_OPS="update_ops")
AUTO_REUSE = True
get_collection = lambda *args: []  # noqa: E731
get_variable_scope = lambda: None  # noqa: E731


@contextlib.contextmanager
def variable_scope(*args, **kwargs):
    yield


def estimator_spec(mode, loss, train_op=None, training_hooks=None, eval_metrics=None):
    """contrib.tpu's TPUEstimatorSpec: what the model function returns, as a dict."""
    names = eval_metrics[0](*eval_metrics[1]) if eval_metrics else {}
    return {"loss": tensor(loss), **{k: tensor(v) for k, v in names.items()}}
