# Domain-incremental: every experience has all 10 digit classes under its own pixel
# permutation, so a fixed 10-unit head (no masking) is used.
_base_ = ["_base_/splitdigits_mlp.py", "_base_/hem.py"]
benchmark = dict(_delete_=True, type="PermutedDigits", n_experiences=5, seed=0, test_size=0.3)
model = dict(_delete_=True, type="MLP", input_size=64, hidden_sizes=[256], num_classes=10)
