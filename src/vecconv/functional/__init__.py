"""vecconv's operations as functions of arrays: convolution and its transpose, their
gradients, the patch matrix and its adjoint, and pooling.

Every name here is also in the top-level ``vecconv`` namespace. Each function takes the
one path of every front end: keywords -> options -> plan -> run.
"""

from .convolution import (conv, conv1d, conv1d_backward, conv2d, conv2d_backward, conv3d,
                          conv3d_backward, conv_backward, conv_plan)
from .transposed import (conv_transpose, conv_transpose1d, conv_transpose1d_backward,
                             conv_transpose2d, conv_transpose2d_backward, conv_transpose3d,
                             conv_transpose3d_backward, conv_transpose_backward)
from .pooling import (avg_pool, avg_pool1d, avg_pool2d, avg_pool3d, avg_pool_backward,
                      max_pool, max_pool1d, max_pool2d, max_pool3d, max_pool_backward)
from .unfold import col2im, im2col

__all__ = ["im2col", "col2im", "conv", "conv_backward", "conv_plan", "conv1d", "conv1d_backward",
           "conv2d", "conv2d_backward", "conv3d", "conv3d_backward", "conv_transpose",
           "conv_transpose_backward", "conv_transpose1d", "conv_transpose1d_backward",
           "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose3d",
           "conv_transpose3d_backward", "avg_pool", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "avg_pool_backward", "max_pool", "max_pool1d", "max_pool2d", "max_pool3d",
           "max_pool_backward"]
