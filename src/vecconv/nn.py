"""The network the seeds derive: layers with forward and backward in the seed's form.

Every layer maps a batch forward, keeps what its backward pass needs, and maps the error
delta = dE/d(output) back to dE/d(input), filling ``grads`` for its ``params``. The
convolution layers run on the compiled engine (``vecconv._plan``); float32 stays float32
throughout.

>>> import numpy as np, vecconv.nn as nn
>>> net = nn.lenet5(dtype=np.float32, seed=0)
>>> net.forward(np.zeros((2, 1, 32, 32), np.float32)).shape
(2, 10)
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from . import _engine
from . import _plan
from ._args import as_array, check_fits, check_ndim, int_tuple, integer

__all__ = ["Conv2D", "AvgPool", "MaxPool", "Dense", "Flatten", "Activation", "Sequential",
           "SquaredError", "SoftmaxCrossEntropy", "SGD", "lenet5", "lenet5_c3_table",
           "load", "ACTIVATIONS"]


# ----------------------------------------------------------------------------- activations
def _sigmoid(z):
    return 0.5 * (np.tanh(0.5 * z) + 1)     # overflow-free logistic


ACTIVATIONS = {
    # name: (f(z), f'(z) expressed through z and a = f(z))
    "identity": (lambda z: z, lambda z, a: np.ones_like(z)),
    "sigmoid": (_sigmoid, lambda z, a: a * (1 - a)),
    "tanh": (np.tanh, lambda z, a: 1 - a * a),
    # LeCun et al. 1998, appendix A: f(z) = A tanh(S z), A = 1.7159, S = 2/3
    "lecun_tanh": (lambda z: 1.7159 * np.tanh(z * (2 / 3)),
                   lambda z, a: (2 / 3) * (1.7159 - a * a / 1.7159)),
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype)),
}


def _activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


# ----------------------------------------------------------------------------- base
class Layer:
    """A layer: ``forward(x)``, ``backward(delta)``, ``params``/``grads`` dicts of arrays."""

    #: False for the first layer of a network: its input needs no error (saves a GEMM)
    needs_input_grad = True
    #: a short label for summaries (LeNet-5's C1, S2, ...)
    name = None

    def __init__(self):
        self.params = {}
        self.grads = {}

    def config(self):
        """What ``load`` needs to rebuild the layer (parameters are stored separately)."""
        return {}

    def param_shapes(self):
        """{name: shape} of every parameter this layer's configuration implies."""
        return {}

    def checked_params(self):
        """``params``, each checked against the layer's configuration before any compiled
        code reads it: the names, the shapes, and a real numeric dtype, converted to the
        layer's dtype (a float64 bias given to a float32 layer is converted, as the
        kernels are). The converted arrays replace the ones in ``params``."""
        shapes = self.param_shapes()
        kind = type(self).__name__
        if set(self.params) != set(shapes):
            raise ValueError(f"{kind} parameters must be {sorted(shapes)}, got {sorted(self.params)}")
        for name, shape in shapes.items():
            a = as_array(f"{kind} parameter {name!r}", self.params[name])
            if a.shape != tuple(shape):
                raise ValueError(f"{kind} parameter {name!r} must have shape {tuple(shape)} "
                                 f"for this layer's configuration, got {a.shape}")
            if a.dtype.kind not in "biuf":
                raise TypeError(f"{kind} parameter {name!r} must be a real numeric array, "
                                f"got dtype {a.dtype}")
            if a.dtype != self.dtype or not a.flags.c_contiguous or not a.flags.writeable:
                a = np.array(a, dtype=self.dtype, order="C")
            self.params[name] = a
        return self.params

    def output_shape(self, input_shape):
        return input_shape

    def parameter_count(self):
        return sum(p.size for p in self.params.values())

    def _check_input(self, x, ndim, layout, channels=None):
        x = as_array("x", x)
        check_ndim(f"{type(self).__name__} input", x.shape, ndim, layout)
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{type(self).__name__} expects {channels} input channels, "
                             f"got input of shape {x.shape}")
        return x

    def _dtype(self):
        return next(iter(self.params.values())).dtype if self.params else None

    def describe(self):
        """One line for ``summary``: the label, the type and the essentials."""
        cfg = {k: v for k, v in self.config().items() if k not in ("connections", "dtype")}
        args = ", ".join(f"{v}" for v in cfg.values())
        return f"{self.name + ' ' if self.name else ''}{type(self).__name__}({args})"

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "connections")
        return f"{type(self).__name__}({args})"


def layer_dtype(dtype):
    """The dtype a layer computes in: float32 or float64 in native byte order."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)) or not dt.isnative:
        raise TypeError(f"dtype must be float32 or float64 (native byte order), got {dt.str!r}")
    return dt


def _lecun_uniform(rng, shape, fan_in, dtype):
    """Uniform with variance 1/fan_in (LeCun et al., 'Efficient BackProp')."""
    a = math.sqrt(3.0 / fan_in)
    return rng.uniform(-a, a, size=shape).astype(dtype)


# ----------------------------------------------------------------------------- layers
class Conv2D(Layer):
    """Convolution layer of the seed's eq. 1 on the vecconv engine.

    z_j = sum_{i in M_j} x_i * k_ij + b_j; its kernel gradient is eq. 12/13 and the error
    for the previous layer eq. 16-18. ``connections`` is the (Cin, Cout) table M_j (the
    seed's Table 1); unconnected kernels are neither used, trained nor counted.
    The activation is a separate layer (``Activation``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0,
                 connections=None, flip=False, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        self.in_channels = integer("in_channels", in_channels, 1)
        self.out_channels = integer("out_channels", out_channels, 1)
        self.kernel_size = int_tuple("kernel_size", kernel_size, 2, 1)
        self.stride, self.padding, self.flip = stride, padding, flip
        self.dtype = layer_dtype(dtype)
        if connections is not None:
            connections = np.asarray(connections, dtype=bool)
            if connections.shape != (self.in_channels, self.out_channels):
                raise ValueError(f"connections must have shape (in_channels, out_channels) = "
                                 f"({self.in_channels}, {self.out_channels}), got {connections.shape}")
        self.connections = connections
        rng = rng if rng is not None else np.random.default_rng(seed)
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels, kh, kw)
        mask = self._mask()
        fan_in = (mask.sum(axis=1) if mask is not None else np.full(self.out_channels, self.in_channels))
        w = np.stack([_lecun_uniform(rng, shape[1:], max(f, 1) * kh * kw, self.dtype) for f in fan_in])
        if mask is not None:
            w *= mask[:, :, None, None]
        self.params = {"w": w, "b": np.zeros(self.out_channels, dtype=self.dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._plans = {}

    def _mask(self):
        return None if self.connections is None else self.connections.T.astype(self.dtype)

    def param_shapes(self):
        return {"w": (self.out_channels, self.in_channels) + self.kernel_size,
                "b": (self.out_channels,)}

    def _plan(self, x_shape):
        plan = self._plans.get(x_shape)
        if plan is None:
            plan = _plan.make_plan(x_shape, self.params["w"].shape, (self.out_channels,),
                                   dtype=self.dtype, stride=self.stride,
                                   padding=self.padding, dilation=1, groups=1,
                                   connections=self.connections, flip=self.flip,
                                   workspace=None, spatial=2)
            check_fits(plan.work_bytes() + plan.work_bytes(backward=True),
                       f"{type(self).__name__} on input {x_shape}")
            self._plans = {x_shape: plan}     # a network sees one or two batch shapes
        return plan

    def forward(self, x):
        x = self._check_input(x, 4, "(N, C, H, W)", self.in_channels)
        x = np.ascontiguousarray(x, dtype=self.dtype)
        params = self.checked_params()
        plan = self._plan(x.shape)
        self._x = x
        self._w2 = _plan.effective_weight(params["w"], plan)
        return _plan.forward(x, self._w2, params["b"], plan)

    def backward(self, delta):
        plan = self._plan(self._x.shape)
        delta = np.ascontiguousarray(delta, dtype=self.dtype)
        dx, dw2 = _plan.backward(delta, self._x, self._w2, plan,
                                 need_dx=self.needs_input_grad, need_dw=True)
        self.grads["w"] = _plan.weight_gradient(dw2, plan)
        self.grads["b"] = delta.sum(axis=(0, 2, 3))                      # eq. 10
        return dx

    def output_shape(self, input_shape):
        return (input_shape[0],) + self._plan((1,) + tuple(input_shape[1:])).out_shape[1:]

    def describe(self):
        kh, kw = self.kernel_size
        table = f", table of {int(self.connections.sum())}" if self.connections is not None else ""
        return f"{self.name + ' ' if self.name else ''}Conv2D {kh}x{kw} {self.in_channels}->{self.out_channels}{table}"

    def parameter_count(self):
        kh, kw = self.kernel_size
        kernels = (self.connections.sum() if self.connections is not None
                   else self.in_channels * self.out_channels)
        return int(kernels * kh * kw + self.out_channels)

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=self.stride,
                    padding=self.padding, flip=self.flip, dtype=self.dtype.name,
                    connections=None if self.connections is None else self.connections.tolist())


def _window_view(x, n):
    """(N, C, H, W) -> (N, C, H/n, n, W/n, n): the non-overlapping n x n areas."""
    N, C, H, W = x.shape
    return x.reshape(N, C, H // n, n, W // n, n)


def down(x, n):
    """The seed's down(): the sum of every non-overlapping n x n area.

    n*n strided adds: several times faster in NumPy than a reduction over two
    non-adjacent axes of the window view.
    """
    out = x[:, :, ::n, ::n].copy()
    for p in range(n):
        for q in range(n):
            if p or q:
                out += x[:, :, p::n, q::n]
    return out


def up(d, n):
    """The seed's up(): d (x) 1_{n x n}, every entry copied into an n x n block (eq. 6)."""
    N, C, h, w = d.shape
    out = np.empty((N, C, h * n, w * n), dtype=d.dtype)
    _window_view(out, n)[...] = d[:, :, :, None, :, None]
    return out


def _check_pool(layer, x, channels=None):
    x = layer._check_input(x, 4, "(N, C, H, W)", channels)
    n = layer.size
    if x.shape[2] % n or x.shape[3] % n:
        raise ValueError(f"{type(layer).__name__}({n}) needs H and W divisible by {n}, "
                         f"got input of shape {x.shape}")
    return x


class AvgPool(Layer):
    """The seed's average polymerization, eq. 2: x_j = f(beta_j down(x_j) + b_j).

    down() sums every non-overlapping n x n area. Backward: delta_z = delta o f'(z);
    dE/db_j = sum delta_z (eq. 20); dE/dbeta_j = sum delta_z o down(x) (eq. 21-22); the
    error for the previous layer is beta_j up(delta_z) with up(d) = d (x) 1_{n x n}, the
    Kronecker product (eq. 4-6).
    """

    def __init__(self, channels, size=2, activation="lecun_tanh", *, dtype=np.float32):
        super().__init__()
        self.channels = integer("channels", channels, 1)
        self.size = integer("size", size, 1)
        self.activation = activation
        self._f, self._df = _activation(activation)
        self.dtype = layer_dtype(dtype)
        # beta starts at 1/n^2, so down() begins as a plain average
        self.params = {"beta": np.full(self.channels, 1.0 / self.size**2, dtype=self.dtype),
                       "b": np.zeros(self.channels, dtype=self.dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def param_shapes(self):
        return {"beta": (self.channels,), "b": (self.channels,)}

    def forward(self, x):
        x = _check_pool(self, x, self.channels)
        x = np.asarray(x, dtype=self.dtype)
        params = self.checked_params()
        self._down = down(x, self.size)
        self._z = (params["beta"][None, :, None, None] * self._down
                   + params["b"][None, :, None, None])
        self._a = self._f(self._z)
        return self._a

    def backward(self, delta):
        dz = np.asarray(delta, dtype=self.dtype) * self._df(self._z, self._a)
        self.grads["b"] = dz.sum(axis=(0, 2, 3))                             # eq. 20
        self.grads["beta"] = (dz * self._down).sum(axis=(0, 2, 3))          # eq. 21-22
        if not self.needs_input_grad:
            return None
        return up(dz * self.checked_params()["beta"][None, :, None, None], self.size)  # eq. 6

    def output_shape(self, input_shape):
        N, C, H, W = input_shape
        return (N, C, H // self.size, W // self.size)

    def config(self):
        return dict(channels=self.channels, size=self.size, activation=self.activation,
                    dtype=self.dtype.name)


class MaxPool(Layer):
    """Max polymerization, eq. 3, with its error of eq. 7-8.

    The error goes only to the position that held the maximum of each n x n area. On ties
    one element wins: the first in row-major order within the window, as in PyTorch.
    """

    def __init__(self, size=2):
        super().__init__()
        self.size = integer("size", size, 1)

    def forward(self, x):
        x = _check_pool(self, x)
        n = self.size
        N, C, H, W = x.shape
        win = _window_view(x, n).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H // n, W // n, n * n)
        self._arg = win.argmax(axis=-1)          # first maximum in row-major window order
        self._shape = x.shape
        return np.take_along_axis(win, self._arg[..., None], axis=-1)[..., 0]

    def backward(self, delta):
        if not self.needs_input_grad:
            return None
        n = self.size
        N, C, H, W = self._shape
        delta = np.asarray(delta)
        win = np.zeros((N, C, H // n, W // n, n * n), dtype=delta.dtype)
        np.put_along_axis(win, self._arg[..., None], delta[..., None], axis=-1)
        return win.reshape(N, C, H // n, W // n, n, n).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H, W)

    def output_shape(self, input_shape):
        N, C, H, W = input_shape
        return (N, C, H // self.size, W // self.size)

    def config(self):
        return dict(size=self.size)


def _matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) through the engine's BLAS, not NumPy's: blocks of rows spread over
    the engine's threads, one single-threaded GEMM each.

    NumPy and SciPy each bundle an OpenBLAS with its own thread pool; a network that used
    NumPy's beside the engine's would keep another pool of spinning workers on the same
    cores (measured with vecconv 0.1: a LeNet-5 step took 2-4x longer).
    """
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b, dtype=a.dtype)
    m, ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if ka != kb:
        raise ValueError(f"matrix product of {a.shape}{'^T' if trans_a else ''} and "
                         f"{b.shape}{'^T' if trans_b else ''}: inner sizes {ka} and {kb} differ")
    out = np.empty((m, n), dtype=a.dtype)
    if not out.size:
        return out
    threads = min(_plan.threads_for(2 * m * n * ka), m)
    rows = -(-m // threads)
    full = m // rows
    # blocks of `rows` rows of the output, one GEMM each, spread over the engine's threads
    # (op(a)'s rows are a's rows, or its columns when transposed)
    a_block = a[:, :rows] if trans_a else a[:rows]
    _engine.gemm_into(a_block, b, out[:rows], trans_a, trans_b, count=full,
                      a_step=rows if trans_a else rows * a.shape[1], c_step=rows * n,
                      threads=threads)
    if full * rows < m:
        _engine.gemm_into(a[:, full * rows:] if trans_a else a[full * rows:], b,
                          out[full * rows:], trans_a, trans_b)
    return out


class Dense(Layer):
    """Fully connected: z = x W^T + b; error back delta^l = (W^{l+1})^T delta^{l+1}."""

    def __init__(self, in_features, out_features, *, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        self.in_features = integer("in_features", in_features, 1)
        self.out_features = integer("out_features", out_features, 1)
        self.dtype = layer_dtype(dtype)
        rng = rng if rng is not None else np.random.default_rng(seed)
        self.params = {"w": _lecun_uniform(rng, (self.out_features, self.in_features),
                                           self.in_features, self.dtype),
                       "b": np.zeros(self.out_features, dtype=self.dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):
        x = self._check_input(x, 2, "(N, features)", None)
        if x.shape[1] != self.in_features:
            raise ValueError(f"Dense expects {self.in_features} input features, got input of "
                             f"shape {x.shape}")
        self._x = np.ascontiguousarray(x, dtype=self.dtype)
        params = self.checked_params()
        out = _matmul(self._x, params["w"], trans_b=True)
        out += params["b"]
        return out

    def param_shapes(self):
        return {"w": (self.out_features, self.in_features), "b": (self.out_features,)}

    def backward(self, delta):
        delta = np.ascontiguousarray(delta, dtype=self.dtype)
        if delta.shape != (self._x.shape[0], self.out_features):
            raise ValueError(f"Dense backward expects delta of shape "
                             f"{(self._x.shape[0], self.out_features)}, got {delta.shape}")
        self.grads["w"] = _matmul(delta, self._x, trans_a=True)
        self.grads["b"] = delta.sum(axis=0)
        return _matmul(delta, self.checked_params()["w"]) if self.needs_input_grad else None

    def output_shape(self, input_shape):
        return (input_shape[0], self.out_features)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    dtype=self.dtype.name)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W)."""

    def forward(self, x):
        x = as_array("x", x)
        if x.ndim < 2:
            raise ValueError(f"Flatten input must have a batch axis, got shape {x.shape}")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, delta):
        return np.asarray(delta).reshape(self._shape)

    def output_shape(self, input_shape):
        return (input_shape[0], math.prod(input_shape[1:]))


class Activation(Layer):
    """An elementwise f; backward multiplies by f'(z) (the o f'(z^l) of eq. 4, 7, 18)."""

    def __init__(self, function="lecun_tanh"):
        super().__init__()
        self.function = function
        self._f, self._df = _activation(function)

    def forward(self, x):
        self._z = as_array("x", x)
        self._a = self._f(self._z)
        return self._a

    def backward(self, delta):
        return np.asarray(delta) * self._df(self._z, self._a)

    def config(self):
        return dict(function=self.function)


# ----------------------------------------------------------------------------- losses
class SquaredError:
    """E = 1/2 sum (y - t)^2 / N, the seed's error; t is one-hot from integer labels."""

    def __call__(self, y, labels):
        t = _one_hot(labels, y.shape, y.dtype)
        diff = y - t
        n = y.shape[0]
        return float(0.5 * np.sum(diff.astype(np.float64) ** 2) / n), (diff / n).astype(y.dtype)


class SoftmaxCrossEntropy:
    """E = -mean log softmax(y)[label]; its error is (softmax(y) - onehot) / N."""

    def __call__(self, y, labels):
        t = _one_hot(labels, y.shape, y.dtype)
        z = y - y.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        n = y.shape[0]
        loss = -float(np.sum(logp.astype(np.float64) * t) / n)
        return loss, ((np.exp(logp) - t) / n).astype(y.dtype)


def _one_hot(labels, shape, dtype):
    labels = np.asarray(labels)
    if labels.shape != (shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {shape[0]} integers, got shape {labels.shape} "
                         f"dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= shape[1]):
        raise ValueError(f"labels must lie in [0, {shape[1]}), got {labels.min()}..{labels.max()}")
    t = np.zeros(shape, dtype=dtype)
    t[np.arange(shape[0]), labels] = 1
    return t


# ----------------------------------------------------------------------------- network
class Sequential:
    """Layers in order; ``backward`` runs the chain rule of the seed's section 3 through them."""

    def __init__(self, layers):
        self.layers = list(layers)
        if self.layers:
            self.layers[0].needs_input_grad = False

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, delta):
        for layer in reversed(self.layers):
            delta = layer.backward(delta)
        return delta

    def parameters(self):
        """[(name, param array, grad array getter)] in a fixed order."""
        out = []
        for i, layer in enumerate(self.layers):
            for k in layer.params:
                out.append((f"{i}.{type(layer).__name__}.{k}", layer, k))
        return out

    def parameter_count(self):
        return sum(layer.parameter_count() for layer in self.layers)

    def predict(self, x, batch_size=256):
        x = as_array("x", x)
        return np.concatenate([self.forward(x[i:i + batch_size]).argmax(axis=1)
                               for i in range(0, len(x), batch_size)]) if len(x) else \
            np.zeros(0, dtype=np.intp)

    def summary(self, input_shape=(1, 1, 32, 32)):
        """A table of every layer's output shape and parameter count, and the total."""
        lines = [f"{'layer':<34}{'output shape':<22}{'parameters':>12}", "-" * 68]
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            lines.append(f"{layer.describe()[:33]:<34}{str(shape[1:]):<22}{layer.parameter_count():>12,}")
        lines.append("-" * 68)
        lines.append(f"{'total':<56}{self.parameter_count():>12,}")
        return "\n".join(lines)

    def save(self, path):
        """Architecture (JSON) and parameters in one .npz file; returns the path written.

        A path without the ``.npz`` suffix gets it (as ``numpy.savez`` does), and ``load``
        finds the file by the same path.
        """
        path = _npz_path(path)
        arrays = {f"p{i}_{k}": v for i, layer in enumerate(self.layers)
                  for k, v in layer.checked_params().items()}
        spec = [dict(type=type(layer).__name__, name=layer.name, config=_plain(layer.config()))
                for layer in self.layers]
        np.savez(path, __spec__=np.array(json.dumps(spec)), **arrays)
        return path


def _plain(value):
    """A configuration as JSON can hold it: numpy scalars and tuples become Python values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    return value


def _npz_path(path):
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


_LAYER_TYPES = {c.__name__: c for c in (Conv2D, AvgPool, MaxPool, Dense, Flatten, Activation)}


def load(path):
    """Rebuild a network saved by ``Sequential.save``; it predicts the same outputs.

    Everything in the file is checked before it is used: it must be a vecconv model
    (an .npz holding ``__spec__``), every layer type and configuration must be valid, and
    the parameter arrays must be exactly the ones the configuration implies (no missing
    or extra arrays; each of the layer's shape and dtype). A path without ``.npz`` is
    read with the suffix added when only that file exists (as ``save`` writes it).
    """
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(_npz_path(path)):
        path = _npz_path(path)
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a vecconv model (an .npz saved by "
                         f"Sequential.save): {exc}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array (.npy), not a vecconv model (an .npz "
                         "saved by Sequential.save)")
    with f:
        if "__spec__" not in f.files:
            raise ValueError(f"{path} is an .npz but not a vecconv model: it has no __spec__")
        try:
            spec = json.loads(str(f["__spec__"]))
            if not isinstance(spec, list) or not all(isinstance(i, dict) for i in spec):
                raise ValueError("not a list of layers")
        except ValueError as exc:
            raise ValueError(f"{path}: the model's __spec__ is not valid: {exc}") from None
        layers, expected = [], set()
        for i, item in enumerate(spec):
            kind = item.get("type")
            if kind not in _LAYER_TYPES:
                raise ValueError(f"{path}: layer {i} has unknown type {kind!r}; known: "
                                 f"{sorted(_LAYER_TYPES)}")
            config = item.get("config", {})
            if not isinstance(config, dict):
                raise ValueError(f"{path}: layer {i} ({kind}) has no valid config")
            try:
                layer = _LAYER_TYPES[kind](**config)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: layer {i} ({kind}) has an invalid config: "
                                 f"{exc}") from None
            layer.name = item.get("name")
            for k, shape in layer.param_shapes().items():
                key = f"p{i}_{k}"
                expected.add(key)
                if key not in f.files:
                    raise ValueError(f"{path}: parameter {key!r} of layer {i} ({kind}) is missing")
                a = f[key]
                if a.shape != tuple(shape) or a.dtype != layer.dtype:
                    raise ValueError(f"{path}: parameter {key!r} of layer {i} ({kind}) must be "
                                     f"{layer.dtype.name} of shape {tuple(shape)}, got "
                                     f"{a.dtype.name} of shape {a.shape}")
                layer.params[k] = np.array(a, order="C")
            layers.append(layer)
        extra = set(f.files) - expected - {"__spec__"}
        if extra:
            raise ValueError(f"{path}: arrays that no layer has: {sorted(extra)}")
    return Sequential(layers)


# ----------------------------------------------------------------------------- training
class SGD:
    """Stochastic gradient descent with momentum: v <- mu v - lr g; p <- p + v."""

    def __init__(self, net, lr=0.01, momentum=0.9, weight_decay=0.0):
        self.net, self.lr, self.momentum, self.weight_decay = net, lr, momentum, weight_decay
        self._velocity = {}

    def step(self):
        for name, layer, k in self.net.parameters():
            p, g = layer.params[k], layer.grads[k]
            if self.weight_decay and k == "w":
                g = g + self.weight_decay * p
            v = self._velocity.get(name)
            if v is None:
                v = self._velocity[name] = np.zeros_like(p)
            v *= self.momentum
            v -= np.asarray(self.lr, dtype=p.dtype) * g
            p += v
            if isinstance(layer, Conv2D) and layer.connections is not None and k == "w":
                # unconnected kernels stay exactly zero, whatever they held (NaN * 0 is NaN)
                p[~layer.connections.T] = 0


# ----------------------------------------------------------------------------- LeNet-5
def lenet5_c3_table():
    """LeCun et al. 1998, Table I: the (6, 16) S2 -> C3 connection table (60 True)."""
    inputs = [(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
              (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
              (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5)]
    table = np.zeros((6, 16), dtype=bool)
    for j, ins in enumerate(inputs):
        table[list(ins), j] = True
    return table


def lenet5(*, dtype=np.float32, seed=0, activation="lecun_tanh", pooling="avg",
           num_classes=10):
    """LeCun et al. 1998's LeNet-5 on 32 x 32 inputs, as the seed derives it.

    C1 6@28x28 (5x5) - S2 6@14x14 (AvgPool 2 with beta, b) - C3 16@10x10 (Table I, 60
    kernels, 1516 parameters) - S4 16@5x5 - C5 120 (5x5 conv) - F6 84 - 10 outputs.
    Every layer up to F6 ends in the squashing function (LeCun's 1.7159 tanh(2x/3)).
    The output layer is linear (a softmax loss replaces the paper's RBF units).
    ``pooling='max'`` swaps S2/S4 for max pooling followed by the activation.
    """
    dtype = layer_dtype(dtype)
    rng = np.random.default_rng(seed)

    def pool(channels):
        if pooling == "avg":
            return [AvgPool(channels, 2, activation, dtype=dtype)]
        if pooling == "max":
            return [MaxPool(2), Activation(activation)]
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")

    layers = [
        ("C1", Conv2D(1, 6, 5, dtype=dtype, rng=rng)), (None, Activation(activation)),
        *[("S2", p) for p in pool(6)],
        ("C3", Conv2D(6, 16, 5, connections=lenet5_c3_table(), dtype=dtype, rng=rng)),
        (None, Activation(activation)),
        *[("S4", p) for p in pool(16)],
        ("C5", Conv2D(16, 120, 5, dtype=dtype, rng=rng)), (None, Activation(activation)),
        (None, Flatten()),
        ("F6", Dense(120, 84, dtype=dtype, rng=rng)), (None, Activation(activation)),
        ("out", Dense(84, num_classes, dtype=dtype, rng=rng)),
    ]
    for label, layer in layers:
        layer.name = label
    return Sequential([layer for _, layer in layers])
