"""Networks from the literature, built from ``vecconv.nn`` layers."""

from .lenet5 import lenet5, lenet5_c3_table

__all__ = ["lenet5", "lenet5_c3_table"]
