# `make bench`: 3 seeds, every classification task on digits and MNIST-1D.
_base_ = "_base.py"
