"""
vecconv inside a PyTorch model
==============================

:mod:`vecconv.torch` gives vecconv's convolution and pooling as differentiable PyTorch
operations on CPU tensors. Use it for what ``torch.nn.functional`` has no word for: a
**connection table** between maps (LeCun et al. 1998, Table I), a **padding mode** such as
``'symmetric'``, or ``flip=True`` (true convolution, the J k J of eq. 14 in Xu's notes after
Bouvrie 2006). Gradients of every order are vecconv's own adjoints (eq. 12-13 and 16-18),
so PyTorch's optimisers, ``torch.autograd.grad(create_graph=True)`` and Hessians work.
"""

# %%
# A module with a connection table
# --------------------------------
# LeNet-5's C3 reads 6 maps into 16, each output map from a subset of the inputs (60 of
# the 96 pairs). The weights of the missing pairs exist in the tensor but never count.
import numpy as np
import torch
import torch.nn.functional as F

import vecconv
import vecconv.torch as vt

torch.manual_seed(0)
table = vecconv.nn.lenet5_c3_table()          # (6, 16) bool, LeCun et al. 1998, Table I


class C3(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(0.1 * torch.randn(16, 6, 5, 5, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.zeros(16, dtype=torch.float64))

    def forward(self, x):
        # a reflected border, and only the table's pairs connected
        return vt.conv(x, self.weight, self.bias, connections=table, padding=2,
                       padding_mode="reflect")


layer = C3()
x = torch.randn(4, 6, 14, 14, dtype=torch.float64, requires_grad=True)
y = layer(x)
print("output", tuple(y.shape), y.dtype)

# %%
# Checked against PyTorch
# -----------------------
# The same layer in PyTorch's own operations: pad by reflection, mask the weights with
# the table, convolve. Values and every gradient agree to rounding.
mask = torch.from_numpy(table.T.astype(np.float64))[:, :, None, None]
ref = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), layer.weight * mask, layer.bias)
assert torch.allclose(y, ref, atol=1e-12)

g = torch.randn_like(y)
got = torch.autograd.grad(y, (x, layer.weight, layer.bias), g)
want = torch.autograd.grad(ref, (x, layer.weight, layer.bias), g)
for a, b in zip(got, want):
    assert torch.allclose(a, b, atol=1e-10)
print("largest gradient difference:", max(float((a - b).abs().max()) for a, b in zip(got, want)))
print("weights of unconnected pairs get exactly zero gradient:",
      bool((got[1][~torch.from_numpy(table.T)] == 0).all()))

# %%
# A second derivative: a gradient penalty
# ---------------------------------------
# Penalising the norm of dy/dx (as a Lipschitz regulariser does) differentiates the
# backward pass itself: vecconv's dx is a transposed convolution of dy, and its own
# derivative again a convolution, so the penalty's gradient is exact.
gx, = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
penalty = gx.square().sum()
dw, = torch.autograd.grad(penalty, layer.weight)
ref_gx, = torch.autograd.grad(
    F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), layer.weight * mask,
             layer.bias).square().sum(), x, create_graph=True)
ref_dw, = torch.autograd.grad(ref_gx.square().sum(), layer.weight)
assert torch.allclose(dw * mask, ref_dw, rtol=1e-9, atol=1e-9)
print("gradient-penalty dW agrees with PyTorch:", float((dw * mask - ref_dw).abs().max()))

# %%
# Training it with a PyTorch optimiser
# ------------------------------------
# Fit the layer to a target made by a hidden layer of the same kind: the loss falls, with
# ``torch.optim.Adam`` driving vecconv's gradients.
target_layer = C3()
data = torch.randn(16, 6, 14, 14, dtype=torch.float64)
with torch.no_grad():
    target = target_layer(data)
opt = torch.optim.Adam(layer.parameters(), lr=0.02)
losses = []
for step in range(60):
    opt.zero_grad()
    loss = (layer(data) - target).square().mean()
    loss.backward()
    opt.step()
    losses.append(loss.item())
assert losses[-1] < 0.05 * losses[0]
print(f"loss {losses[0]:.4f} -> {losses[-1]:.6f} in 60 Adam steps")

import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.semilogy(losses)
ax.set_xlabel("Adam step")
ax.set_ylabel("mean squared error")
ax.set_title("C3 with a connection table and reflect padding, trained by PyTorch")
plt.show()

# %%
# Half precision
# --------------
# bfloat16 and float16 tensors are computed in float32 and answered in their own dtype,
# gradients included.
xb = torch.randn(2, 6, 14, 14, dtype=torch.bfloat16, requires_grad=True)
wb = torch.randn(16, 6, 5, 5, dtype=torch.bfloat16, requires_grad=True)
yb = vt.conv(xb, wb, connections=table)
yb.sum().backward()
print(yb.dtype, xb.grad.dtype, wb.grad.dtype)
