_base_ = ["_base_/splitdigits_mlp.py", "_base_/ce.py"]
strategy = dict(type="EWC", ewc_lambda=10.0)
