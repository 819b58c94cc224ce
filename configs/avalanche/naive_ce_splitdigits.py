_base_ = ["_base_/splitdigits_mlp.py", "_base_/ce.py"]
strategy = dict(type="Naive")
