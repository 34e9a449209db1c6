"""
The derivation, executed
========================

This page walks through Haoxiang Xu's *Derivation of Convolutional Neural Networks*
[Xu2014]_, itself written after Jake Bouvrie's *Notes on Convolutional Neural Networks*
[Bouvrie2006]_, equation by equation, and runs each step with vecconv. The equation numbers
are Xu's. Every figure is drawn from what vecconv returns, and every cell asserts the
identity it shows — against :mod:`scipy.signal` (``correlate2d``, ``convolve2d``) or plain
NumPy — so when this page builds, the identities hold.

Two conventions run through the text (Xu discusses them around eq. 14):

* *cross-correlation*, :math:`z_{ij} = \\sum_{pq} k_{pq}\\, x_{i+p,\\,j+q}`, is what PyTorch
  calls convolution and what ``vecconv.conv(..., flip=False)`` computes
  (``scipy.signal.correlate2d``);
* *true convolution*, the :math:`*` of eq. 1, first rotates the kernel by 180°,
  :math:`\\mathbf{J}\\mathbf{k}\\mathbf{J}` with :math:`\\mathbf{J}` the exchange matrix:
  ``flip=True`` (``scipy.signal.convolve2d``, MATLAB's ``convn``).
"""

# %%
# Setup
# -----
# Everything runs in float64, so the identities hold to rounding.

import matplotlib.pyplot as plt
import numpy as np
import scipy.signal

import vecconv
import vecconv.nn as nn

rng = np.random.default_rng(2014)
close = dict(rtol=1e-12, atol=1e-12)


DIVERGING = {"RdBu", "RdBu_r", "PuOr", "PuOr_r", "coolwarm", "bwr", "seismic"}


def show_matrix(ax, a, title, fmt="{:g}", cmap="Blues", labels=True):
    """Draw a small matrix with its entries written in the cells (white on dark ones); a
    diverging colour map is centred on zero, so the sign reads off the colour."""
    if cmap in DIVERGING:
        top = float(np.abs(a).max()) or 1.0
        im = ax.imshow(a, cmap=cmap, vmin=-top, vmax=top)
    else:
        im = ax.imshow(a, cmap=cmap)
    if labels:
        for (i, j), v in np.ndenumerate(a):
            r, g, b_, _ = im.cmap(im.norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b_ < 0.5
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


# %%
# Eq. 1: a convolutional layer
# ----------------------------
# Output map :math:`j` of layer :math:`l` sums the convolutions of the input maps
# :math:`i \in M_j` connected to it, adds a bias and applies the activation :math:`f`:
#
# .. math::
#
#    \mathbf{x}_j^l = f\Big(\sum_{i\in M_j} \mathbf{x}_i^{l-1} * \mathbf{k}_{ij}^l
#                     + b_j^l\Big).
#
# ``vecconv.conv2d`` computes the sum inside :math:`f` for a whole batch at once.
# With ``flip=True`` it is eq. 1's true convolution; by default it is cross-correlation.

x = rng.standard_normal((2, 3, 9, 9))          # (N, C, H, W)
w = rng.standard_normal((4, 3, 3, 3))          # (Cout, C, kh, kw)
b = rng.standard_normal(4)

z_true = vecconv.conv2d(x, w, b, flip=True)
z_corr = vecconv.conv2d(x, w, b)
for n in range(2):
    for j in range(4):
        ref_true = sum(scipy.signal.convolve2d(x[n, i], w[j, i], "valid") for i in range(3))
        ref_corr = sum(scipy.signal.correlate2d(x[n, i], w[j, i], "valid") for i in range(3))
        np.testing.assert_allclose(z_true[n, j], ref_true + b[j], **close)
        np.testing.assert_allclose(z_corr[n, j], ref_corr + b[j], **close)
print("output shape", z_true.shape, "(M - K + 1 = 9 - 3 + 1 = 7)")

# %%
# vec and unvec
# -------------
# The matrix form needs one operator from matrix calculus [Magnus2007]_: :math:`\mathrm{vec}`
# stacks the columns of a matrix into one vector, and :math:`\mathrm{unvec}_{m,n}` refills an
# :math:`m\times n` matrix column by column. They are ``vecconv.vec`` and ``vecconv.unvec``.

a = np.arange(1.0, 7.0).reshape(2, 3)
v = vecconv.vec(a)
np.testing.assert_array_equal(v, [1, 4, 2, 5, 3, 6])          # column by column
np.testing.assert_array_equal(vecconv.unvec(v, a.shape), a)
np.testing.assert_array_equal(v, a.flatten(order="F"))

fig, axes = plt.subplots(1, 3, figsize=(7, 2.2), gridspec_kw=dict(width_ratios=[3, 6, 3]))
show_matrix(axes[0], a, "A")
show_matrix(axes[1], v[None, :], r"vec(A)$^{\mathsf{T}}$")
show_matrix(axes[2], vecconv.unvec(v, a.shape), r"unvec$_{2,3}$(vec(A))")
fig.tight_layout()

# %%
# Eq. 12: the patch matrix
# ------------------------
# For one input map :math:`\mathbf{x}` (:math:`M_1\times M_2`) and one kernel
# (:math:`K_1\times K_2`), let :math:`[\mathbf{c}]_{p,q}` be the
# :math:`(M_1-K_1+1)\times(M_2-K_2+1)` block of :math:`\mathbf{x}` that kernel entry
# :math:`(p,q)` meets in a valid correlation. The patch matrix puts their vecs side by side,
#
# .. math::
#
#    \mathbf{C} = \big[\mathrm{vec}([\mathbf{c}]_{1,1})\ \cdots\
#    \mathrm{vec}([\mathbf{c}]_{K_1,1})\ \mathrm{vec}([\mathbf{c}]_{1,2})\ \cdots\
#    \mathrm{vec}([\mathbf{c}]_{K_1,K_2})\big],
#
# so that the forward pass is one matrix product,
# :math:`\mathrm{vec}(\mathbf{z}) = \mathbf{C}\,\mathrm{vec}(\mathbf{k})`, and eq. 12's kernel
# gradient is another:
#
# .. math::
#
#    \frac{\partial E}{\partial \mathbf{k}} =
#    \mathrm{unvec}_{K_1,K_2}\big(\mathrm{vec}(\boldsymbol\delta)^{\mathsf T}\mathbf{C}\big).
#
# Below, a 4×4 map whose entries are 1…16 (so each cell of :math:`\mathbf{C}` tells which
# pixel it holds) and a 2×2 kernel: :math:`\mathbf{C}` is 9×4, one row per output position,
# one column per kernel entry.

xs = np.arange(1.0, 17.0).reshape(4, 4)
ks = np.array([[1.0, 2.0], [3.0, 4.0]])
C = vecconv.patch_matrix(xs, ks.shape)
assert C.shape == (9, 4)

# the forward pass: unvec(C vec(k)) is the valid cross-correlation
np.testing.assert_allclose(vecconv.unvec(C @ vecconv.vec(ks), (3, 3)),
                           scipy.signal.correlate2d(xs, ks, "valid"), **close)
# column p + q*K1 is vec([c]_{p,q}): the block of x that kernel entry (p, q) meets
for p in range(2):
    for q in range(2):
        np.testing.assert_array_equal(C[:, p + 2 * q], vecconv.vec(xs[p:p + 3, q:q + 3]))

fig, axes = plt.subplots(1, 3, figsize=(8, 3.6), gridspec_kw=dict(width_ratios=[4, 2, 4]))
show_matrix(axes[0], xs, r"$\mathbf{x}$ (4×4)", cmap="viridis")
show_matrix(axes[1], ks, r"$\mathbf{k}$ (2×2)", cmap="Greys")
axes[2].imshow(C, cmap="viridis", vmin=1, vmax=16, aspect=0.5)
for (i, j), val in np.ndenumerate(C):
    axes[2].text(j, i, f"{val:g}", ha="center", va="center", fontsize=8,
                 color="white" if val < 9 else "black")
axes[2].set_xticks(range(4), [r"$[c]_{1,1}$", r"$[c]_{2,1}$", r"$[c]_{1,2}$", r"$[c]_{2,2}$"])
axes[2].set_yticks(range(9), [f"vec pos {r + 1}" for r in range(9)], fontsize=7)
axes[2].set_title(r"$\mathbf{C}$ = patch_matrix(x, (2, 2)), 9×4", fontsize=10)
fig.tight_layout()

# %%
# The kernel gradient of eq. 12 is the row vector :math:`\mathrm{vec}(\boldsymbol\delta)^{\mathsf
# T}` times :math:`\mathbf{C}`. Written as a correlation (eq. 13) it is the valid correlation of
# the input with :math:`\boldsymbol\delta`. ``vecconv.conv2d_backward`` returns the same
# numbers, for a whole batch and every map pair, through the batched patch matrix
# ``vecconv.im2col`` and one GEMM per image.

delta = rng.standard_normal((3, 3))                      # dE/dz of the 3x3 output
dk = vecconv.unvec(vecconv.vec(delta) @ C, ks.shape)
np.testing.assert_allclose(dk, scipy.signal.correlate2d(xs, delta, "valid"), **close)
_, dw, db = vecconv.conv2d_backward(delta[None, None], xs[None, None], ks[None, None])
np.testing.assert_allclose(dw[0, 0], dk, **close)

# im2col is the same matrix, rows and columns in row-major (C) order rather than vec's
cols = vecconv.im2col(xs[None, None], 2)
np.testing.assert_array_equal(cols, C.reshape(3, 3, 2, 2).transpose(1, 0, 3, 2).reshape(9, 4))

# %%
# Eq. 10: the bias gradient
# -------------------------
# Every output entry has the bias added once, so :math:`\partial E/\partial b_j` is the sum
# of :math:`\boldsymbol\delta_j` (over the batch too): ``db`` above.

np.testing.assert_allclose(db, [delta.sum()], **close)

# %%
# Eq. 14: the J flips
# -------------------
# :math:`\mathbf{J}` is the exchange matrix (ones on the anti-diagonal);
# :math:`\mathbf{J}\mathbf{A}\mathbf{J}` rotates :math:`\mathbf{A}` by 180°, and
# :math:`\mathbf{J}\,\mathrm{vec}(\mathbf{A})` reverses the whole vector, which is
# :math:`\mathrm{vec}(\mathbf{J}\mathbf{A}\mathbf{J})`. When the forward pass is eq. 1's
# true convolution, :math:`\mathbf{z} = \mathbf{x} * \mathbf{k}
# = \mathbf{x} \star \mathbf{J}\mathbf{k}\mathbf{J}`, and its kernel gradient is
#
# .. math::
#
#    \frac{\partial E}{\partial \mathbf{k}} =
#    \mathbf{J}\big(\mathbf{x} * \mathbf{J}\boldsymbol\delta\mathbf{J}\big)\mathbf{J}.
#
# The flip of the vec form, :math:`(\mathbf{J}\,\mathrm{vec}(\boldsymbol\delta))^{\mathsf
# T}\mathbf{C}`, turns eq. 12's correlation into the convolution
# :math:`\mathbf{x} * \boldsymbol\delta` of eq. 13.

J = np.eye(3)[::-1]
np.testing.assert_array_equal(J @ delta @ J, np.rot90(delta, 2))
np.testing.assert_array_equal(np.eye(9)[::-1] @ vecconv.vec(delta), vecconv.vec(J @ delta @ J))

# eq. 14 against vecconv's gradient of a true-convolution (flip=True) layer
Jk = np.eye(2)[::-1]
_, dw_true, _ = vecconv.conv2d_backward(delta[None, None], xs[None, None], ks[None, None],
                                        flip=True)
eq14 = Jk @ scipy.signal.convolve2d(xs, J @ delta @ J, "valid") @ Jk
np.testing.assert_allclose(dw_true[0, 0], eq14, **close)
# the flipped vec form: (J vec(delta))^T C is the true convolution x * delta
flipped = vecconv.unvec((np.eye(9)[::-1] @ vecconv.vec(delta)) @ C, ks.shape)
np.testing.assert_allclose(flipped, scipy.signal.convolve2d(xs, delta, "valid"), **close)

fig, axes = plt.subplots(1, 4, figsize=(9, 2.6))
show_matrix(axes[0], ks, r"$\mathbf{k}$", cmap="Greys")
show_matrix(axes[1], Jk @ ks @ Jk, r"$\mathbf{J}\mathbf{k}\mathbf{J}$", cmap="Greys")
show_matrix(axes[2], dw_true[0, 0], "vecconv dw, flip=True", fmt="{:.2f}", cmap="RdBu")
show_matrix(axes[3], eq14, "eq. 14 (convolve2d)", fmt="{:.2f}", cmap="RdBu")
fig.tight_layout()

# %%
# Eq. 16–18: the error of the previous layer, by col2im
# -----------------------------------------------------
# Each input pixel :math:`[\mathbf{x}_i]_{r,s}` met kernel entry :math:`(p,q)` at output
# position :math:`(r-p, s-q)`, so its error collects :math:`\delta_{r-p,s-q}k_{p,q}` over every
# entry. Xu writes this as a convolution of the zero-padded error
# :math:`\widetilde{\boldsymbol\delta}` with the flipped kernel (eq. 16), summed over the maps
# :math:`j \in M_i` that :math:`\mathbf{x}_i` feeds (eq. 17):
#
# .. math::
#
#    \frac{\partial E}{\partial \mathbf{x}_i} = \sum_{j\in M_i}
#    \widetilde{\boldsymbol\delta}_j * (\mathbf{J}\mathbf{k}_{ij}\mathbf{J}).
#
# For a cross-correlation forward pass this is the *full* convolution of
# :math:`\boldsymbol\delta` with :math:`\mathbf{k}` itself. vecconv never pads
# :math:`\boldsymbol\delta`: it forms the column matrix
# :math:`\mathrm{vec}(\boldsymbol\delta)\,\mathrm{vec}(\mathbf{k})^{\mathsf T}` (one GEMM) and
# ``col2im`` adds every entry back to the pixel it came from — the adjoint of ``im2col``.

delta_cols = delta.reshape(9, 1) @ ks.reshape(1, 4)          # row: position, column: tap
dx_col2im = vecconv.col2im(delta_cols, (1, 1, 4, 4), 2)[0, 0]
full = scipy.signal.convolve2d(delta, ks, "full")
np.testing.assert_allclose(dx_col2im, full, **close)
dx, _, _ = vecconv.conv2d_backward(delta[None, None], xs[None, None], ks[None, None])
np.testing.assert_allclose(dx[0, 0], full, **close)
# eq. 16 literally, in Xu's convention (the forward pass a true convolution, flip=True):
# the error padded with K - 1 = 1 zero on every side, convolved with J k J
delta_pad = np.pad(delta, 1)
dx_true, _, _ = vecconv.conv2d_backward(delta[None, None], xs[None, None], ks[None, None],
                                        flip=True)
np.testing.assert_allclose(dx_true[0, 0],
                           scipy.signal.convolve2d(delta_pad, Jk @ ks @ Jk, "valid"), **close)

fig, axes = plt.subplots(1, 4, figsize=(9.5, 2.8))
show_matrix(axes[0], delta, r"$\boldsymbol{\delta}$ (3×3)", fmt="{:.1f}", cmap="RdBu")
show_matrix(axes[1], delta_pad, r"$\widetilde{\boldsymbol{\delta}}$ (zero-padded)",
            fmt="{:.1f}", cmap="RdBu")
show_matrix(axes[2], dx_col2im, "col2im (vecconv)", fmt="{:.1f}", cmap="RdBu")
show_matrix(axes[3], full, "convolve2d(δ, k, 'full')", fmt="{:.1f}", cmap="RdBu")
fig.tight_layout()

# %%
# With several maps, eq. 17 sums over the output maps each input map feeds, and only those:
# a connection table leaves the others out of the arithmetic entirely.

table = np.array([[1, 1, 0], [0, 1, 1]], dtype=bool)          # (Cin, Cout)
xm = rng.standard_normal((1, 2, 6, 6))
km = rng.standard_normal((3, 2, 3, 3))
dm = rng.standard_normal((1, 3, 4, 4))
dxm, dwm, _ = vecconv.conv2d_backward(dm, xm, km, connections=table)
for i in range(2):
    m_i = np.flatnonzero(table[i])                             # M_i of eq. 17
    ref = sum(scipy.signal.convolve2d(dm[0, j], km[j, i], "full") for j in m_i)
    np.testing.assert_allclose(dxm[0, i], ref, **close)
assert not dwm[2, 0].any() and not dwm[0, 1].any()             # pairs not connected: zero

# %%
# The LeNet-5 connection table
# ----------------------------
# In LeNet-5 [LeCun1998]_ the six maps of S2 feed the sixteen of C3 through a partial table
# (LeCun et al.'s Table I, Xu's Table 1): 60 kernels of 5×5 and 16 biases, so
# :math:`60\cdot 5\cdot 5 + 16 = 1516` parameters. ``vecconv.nn.lenet5_c3_table()`` returns
# it as a (6, 16) boolean array, in the table's orientation (rows: S2 maps, columns: C3 maps),
# and Xu's example holds: S2's map 0 feeds C3's maps 0, 4, 5, 6, 9, 10, 11, 12, 14 and 15.

c3 = nn.lenet5_c3_table()
assert c3.shape == (6, 16) and c3.sum() == 60
np.testing.assert_array_equal(np.flatnonzero(c3[0]), [0, 4, 5, 6, 9, 10, 11, 12, 14, 15])
layer = nn.Conv2D(6, 16, 5, connections=c3, dtype=np.float64, seed=0)
assert layer.parameter_count() == 60 * 5 * 5 + 16 == 1516

fig, ax = plt.subplots(figsize=(8, 3.4))
ax.imshow(c3, cmap="Greys", vmin=0, vmax=2.5)
for (i, j), on in np.ndenumerate(c3):
    if on:
        ax.text(j, i, "X", ha="center", va="center", fontsize=11, fontweight="bold")
ax.set_xticks(range(16))
ax.set_yticks(range(6))
ax.set_xlabel("C3 feature map j")
ax.set_ylabel("S2 feature map i")
ax.set_title("LeCun et al. 1998, Table I: lenet5_c3_table() (60 X)")
ax.set_xticks(np.arange(-0.5, 16), minor=True)
ax.set_yticks(np.arange(-0.5, 6), minor=True)
ax.grid(which="minor", color="0.6", linewidth=0.6)
ax.tick_params(which="minor", length=0)
fig.tight_layout()

# %%
# C3's forward pass is eq. 1 with these index sets :math:`M_j`:

s2 = rng.standard_normal((1, 6, 14, 14))
c3_out = layer.forward(s2)                       # conv + the layer's bias, no activation
for j in (0, 6, 12, 15):
    ref = sum(scipy.signal.correlate2d(s2[0, i], layer.params["w"][j, i], "valid")
              for i in np.flatnonzero(c3[:, j]))
    np.testing.assert_allclose(c3_out[0, j], ref + layer.params["b"][j], rtol=1e-10, atol=1e-10)
print("C3 output", c3_out.shape)

# %%
# Eq. 2 and eq. 20–22: average pooling with a trainable β
# -------------------------------------------------------
# Xu's "average polymerization" layer sums every non-overlapping :math:`n\times n` area
# (:math:`\mathrm{down}`), scales the sum by a trainable :math:`\beta_j`, adds
# :math:`b_j` and applies :math:`f`:
#
# .. math::
#
#    \mathbf{x}_j^l = f\big(\beta_j^l\,\mathrm{down}(\mathbf{x}_j^{l-1}) + b_j^l\big).
#
# With :math:`\boldsymbol\delta_j = \partial E/\partial \mathbf{z}_j` (the error before
# :math:`f`) the two gradients are sums (eq. 20 and eq. 21–22):
#
# .. math::
#
#    \frac{\partial E}{\partial b_j} = \sum_{p,q} [\boldsymbol\delta_j]_{p,q}, \qquad
#    \frac{\partial E}{\partial \beta_j} = \sum_{p,q} [\boldsymbol\delta_j]_{p,q}
#    \,[\mathrm{down}(\mathbf{x}_j^{l-1})]_{p,q}.
#
# ``vecconv.nn.Subsampling`` is this layer (LeCun's S2 and S4); ``vecconv.matrix.down`` is
# :math:`\mathrm{down}`. (``vecconv.nn.AvgPool`` is PyTorch's parameter-free average: this
# layer with :math:`\beta_j = 1/n^2`, :math:`b_j = 0` and no :math:`f`.)

pool = nn.Subsampling(2, 2, activation="tanh", dtype=np.float64)
pool.params["beta"] = np.array([0.3, -0.7])
pool.params["b"] = np.array([0.1, 0.2])
xp = rng.standard_normal((3, 2, 6, 6))
out = pool.forward(xp)
down = vecconv.matrix.down(xp, 2)
np.testing.assert_allclose(down, xp.reshape(3, 2, 3, 2, 3, 2).sum(axis=(3, 5)), **close)
np.testing.assert_allclose(down, 4 * vecconv.avg_pool2d(xp, 2), **close)
zp = pool.params["beta"][None, :, None, None] * down + pool.params["b"][None, :, None, None]
np.testing.assert_allclose(out, np.tanh(zp), **close)

fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
show_matrix(axes[0], xp[0, 1], r"$\mathbf{x}_j^{l-1}$ (6×6)", fmt="{:.1f}", cmap="PuOr")
show_matrix(axes[1], down[0, 1], "down(x): 2×2 sums", fmt="{:.2f}", cmap="PuOr")
show_matrix(axes[2], zp[0, 1], r"$\beta_j$ down(x) + $b_j$ ($\beta_j$=-0.7, $b_j$=0.2)",
            fmt="{:.2f}", cmap="PuOr")
show_matrix(axes[3], out[0, 1], "Subsampling output f(z), f = tanh", fmt="{:.2f}", cmap="PuOr")
fig.tight_layout()

dout = rng.standard_normal(out.shape)                   # dE/d(output)
dxp = pool.backward(dout)
dz = dout * (1 - np.tanh(zp) ** 2)                      # delta before f
np.testing.assert_allclose(pool.grads["b"], dz.sum(axis=(0, 2, 3)), **close)            # eq. 20
np.testing.assert_allclose(pool.grads["beta"], (dz * down).sum(axis=(0, 2, 3)), **close)  # 21-22

# and the same gradients by central differences of E = <dout, output>
eps = 1e-6
for name in ("beta", "b"):
    for c in range(2):
        e = np.zeros(2)
        e[c] = eps
        base = pool.params[name].copy()
        pool.params[name] = base + e
        up_e = (dout * pool.forward(xp)).sum()
        pool.params[name] = base - e
        down_e = (dout * pool.forward(xp)).sum()
        pool.params[name] = base
        np.testing.assert_allclose((up_e - down_e) / (2 * eps), pool.grads[name][c], rtol=1e-6)

# %%
# Eq. 4–6: the error through pooling, by Kronecker up-sampling
# ------------------------------------------------------------
# Every entry of a pooling window received :math:`\beta_j` times the window's error, so the
# error map is copied into :math:`n\times n` blocks — the Kronecker product with a block of
# ones, :math:`\mathrm{up}(\boldsymbol\delta) = \boldsymbol\delta \otimes \mathbf{1}_{n\times n}`
# — and scaled by :math:`\beta_j` (eq. 6; the factor :math:`f'(\mathbf{z}^l)` of eq. 6 belongs
# to the activation of the layer before, which multiplies it in its own backward pass).

np.testing.assert_allclose(vecconv.matrix.up(dz, 2), np.kron(dz, np.ones((1, 1, 2, 2))), **close)
np.testing.assert_allclose(dxp, pool.params["beta"][None, :, None, None] * vecconv.matrix.up(dz, 2),
                           **close)
# the functional form: avg_pool's adjoint is up() divided by the window's size
np.testing.assert_allclose(vecconv.avg_pool_backward(dz, xp.shape, kernel_size=2),
                           vecconv.matrix.up(dz, 2) / 4,
                           **close)

small = np.array([[1.0, -2.0], [0.5, 3.0]])
fig, axes = plt.subplots(1, 2, figsize=(6, 2.8), gridspec_kw=dict(width_ratios=[1, 2]))
show_matrix(axes[0], small, r"$\boldsymbol{\delta}$ (2×2)", cmap="RdBu")
show_matrix(axes[1], vecconv.matrix.up(small, 2),
            r"up($\boldsymbol{\delta}$) = $\boldsymbol{\delta} \otimes$"
            r" $\mathbf{1}_{2\times 2}$", cmap="RdBu")
fig.tight_layout()

# %%
# Eq. 3 and 7–8: max pooling
# --------------------------
# Max pooling [Scherer2010]_ has no parameters; its error goes only to the entry that held
# each window's maximum, :math:`\boldsymbol\delta^{l+1}\,\mathbf{1}\{x = \max x\}`.

ym, idx = vecconv.max_pool2d(xp, 2, return_indices=True)
dmax = vecconv.max_pool_backward(dz, xp, kernel_size=2, indices=idx)
windows = xp.reshape(3, 2, 3, 2, 3, 2)
is_max = windows == windows.max(axis=(3, 5), keepdims=True)
np.testing.assert_allclose(ym, windows.max(axis=(3, 5)), **close)
np.testing.assert_allclose(dmax, (is_max * dz[:, :, :, None, :, None]).reshape(xp.shape),
                           **close)

# %%
# What this adds up to
# --------------------
# LeNet-5 as ``vecconv.nn.lenet5()`` builds it stacks these layers: C1, S2 (eq. 2), C3 with
# Table I, S4, C5, F6 and the output, 60,850 parameters. Its backward pass is the equations
# above, layer by layer; a last check compares one gradient entry with a finite difference.

net = nn.lenet5(dtype=np.float64, seed=0)
assert net.parameter_count() == 60850
digits = rng.standard_normal((2, 1, 32, 32))
target = rng.standard_normal((2, 10))
net.backward(net.forward(digits) - target)               # E = 0.5 ||y - t||^2
c3_layer = [layer for layer in net.layers if layer.name == "C3"][0]
g = c3_layer.grads["w"][0, 1, 2, 3]
w_c3 = c3_layer.params["w"]
w_c3[0, 1, 2, 3] += eps
e_plus = 0.5 * ((net.forward(digits) - target) ** 2).sum()
w_c3[0, 1, 2, 3] -= 2 * eps
e_minus = 0.5 * ((net.forward(digits) - target) ** 2).sum()
w_c3[0, 1, 2, 3] += eps
np.testing.assert_allclose((e_plus - e_minus) / (2 * eps), g, rtol=1e-5, atol=1e-9)
print(f"dE/dk for C3 kernel (S2 map 1 -> C3 map 0), entry (2, 3): {g:.6f}")

# %%
# References
# ----------
# The works cited on this page — Xu's derivation [Xu2014]_, Bouvrie's notes [Bouvrie2006]_,
# LeCun et al.'s LeNet-5 paper [LeCun1998]_, Magnus and Neudecker's matrix calculus
# [Magnus2007]_ and Scherer et al. on pooling [Scherer2010]_ — are listed with their full
# details on the :doc:`References </references>` page.
