_base_ = ["_base_/splitdigits_mlp.py", "_base_/hemplus.py"]
strategy = dict(type="LwF", alpha=1.0, temperature=2.0)
