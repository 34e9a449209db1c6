"""
A network with vecconv.nn
=========================

:mod:`vecconv.nn` builds networks from layers on vecconv's engine: each layer is a thin
wrapper over the functions (options checked once, a plan per input shape, the backward
pass by the derivation's eq. 10, 12-13 and 16-18). This page builds a small network,
trains it with a training loop of five lines, saves and loads it, and adds a layer of
your own that loads again.

The task is made here, so the page needs no download: tell apart images of a bar that is
horizontal, vertical, or on one of the two diagonals, on a noisy background.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import vecconv.nn as nn


def bars(n, rng, size=16):
    """n noisy 16 x 16 images of a bar in one of four orientations, and their labels."""
    x = 0.3 * rng.standard_normal((n, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 4, n)
    for i, label in enumerate(y):
        r, c = rng.integers(3, size - 3, 2)
        for t in range(-3, 4):
            dr, dc = [(0, t), (t, 0), (t, t), (t, -t)][label]
            x[i, 0, r + dr, c + dc] += 1.0
    return x, y


rng = np.random.default_rng(0)
x_train, y_train = bars(2000, rng)
x_test, y_test = bars(500, rng)

# %%
# The network
# -----------
# Two convolutions with max pooling, then a dense layer: ``summary`` gives every layer's
# output shape and parameter count for an input shape.
net = nn.Sequential([
    nn.Conv2D(1, 8, 3, padding=1, seed=1), nn.Activation("relu"), nn.MaxPool2D(2),
    nn.Conv2D(8, 16, 3, padding=1, seed=2), nn.Activation("relu"), nn.MaxPool2D(2),
    nn.Flatten(), nn.Dense(16 * 4 * 4, 4, seed=3),
], input_shape=(1, 16, 16))
print(net.summary())

# %%
# Training
# --------
# One step: forward, the loss and its gradient, backward (every layer stores its
# parameters' gradients), and the optimiser's update.
loss_fn = nn.SoftmaxCrossEntropy()
opt = nn.SGD(net, lr=0.05, momentum=0.9)
history = []
for epoch in range(4):
    order = rng.permutation(len(x_train))
    for start in range(0, len(order), 50):
        batch = order[start:start + 50]
        loss, grad = loss_fn(net.forward(x_train[batch]), y_train[batch])
        net.backward(grad)
        opt.step()
        history.append(loss)
    accuracy = float((net.predict(x_test) == y_test).mean())
    print(f"epoch {epoch + 1}: loss {np.mean(history[-40:]):.3f}, test accuracy {accuracy:.3f}")
assert accuracy > 0.9

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.plot(history)
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy")
ax.set_title(f"training on oriented bars: {accuracy:.1%} of the test images right")
plt.show()

# %%
# Saving and loading
# ------------------
# One ``.npz`` file holds the architecture (JSON) and the parameters; ``load`` checks all
# of it before it builds anything and predicts the same outputs.
folder = Path(tempfile.mkdtemp())
path = net.save(folder / "bars")
again = nn.load(path)
assert np.array_equal(again.forward(x_test), net.forward(x_test))
print("saved to", Path(path).name, "and loaded: the same outputs")

# %%
# A layer of your own
# -------------------
# A layer is a subclass of :class:`vecconv.nn.Layer`: ``forward`` and ``backward``, its
# parameters registered with ``add_parameter``, and ``config()`` / ``param_shapes()``
# so that it can be saved. ``load`` rebuilds only the classes it is given.


class Scale(nn.Layer):
    """y = a x per channel, with a trainable a."""

    def __init__(self, channels: int, dtype="float32"):
        super().__init__()
        self.channels = channels
        self.dtype = np.dtype(dtype)
        self.add_parameter("a", np.ones(channels, dtype=self.dtype))

    def forward(self, x):
        self._x = np.asarray(x, dtype=self.dtype)
        return self._x * self.params["a"][None, :, None, None]

    def backward(self, delta, input_grad=True):
        a = self.params["a"]
        self.grads["a"] = (delta * self._x).sum(axis=(0, 2, 3))
        return delta * a[None, :, None, None] if input_grad else None

    def config(self):
        return {"channels": self.channels, "dtype": self.dtype.name}

    def param_shapes(self):
        return {"a": (self.channels,)}


custom = nn.Sequential([nn.Conv2D(1, 8, 3, padding=1, seed=1), Scale(8),
                        nn.Activation("relu"), nn.MaxPool2D(4), nn.Flatten(),
                        nn.Dense(8 * 4 * 4, 4, seed=3)], input_shape=(1, 16, 16))
opt = nn.SGD(custom, lr=0.05, momentum=0.9)
for start in range(0, 2000, 50):
    loss, grad = loss_fn(custom.forward(x_train[start:start + 50]),
                         y_train[start:start + 50])
    custom.backward(grad)
    opt.step()
path = custom.save(folder / "custom")
try:
    nn.load(path)
except ValueError as exc:
    print("without the class:", str(exc)[:100], "...")
loaded = nn.load(path, layers=[Scale])
assert np.array_equal(loaded.forward(x_test), custom.forward(x_test))
print("with layers=[Scale]: loaded, a =", np.round(loaded.layers[1].params["a"], 3))
