_base_ = ["_base_/splitdigits_mlp.py", "_base_/hemplus.py"]
strategy = dict(type="Naive")
