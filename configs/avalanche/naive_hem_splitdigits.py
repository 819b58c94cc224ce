_base_ = ["_base_/splitdigits_mlp.py", "_base_/hem.py"]
strategy = dict(type="Naive")
