# SplitDigits (5 experiences of 2 classes, class-incremental) and a one-hidden-layer MLP
# whose IncrementalClassifier head grows with the classes (unseen units masked at -1000).
benchmark = dict(type="SplitDigits", n_experiences=5, seed=0, test_size=0.3)
model = dict(type="IncrementalMLP", input_size=64, hidden_sizes=[256], mask_value=-1000)
strategy = dict(type="Naive", train_mb_size=32, train_epochs=10, eval_mb_size=512)
# The full log (Avalanche's TextLogger and the warnings) in work_dir/log.txt; interactive=True
# adds its progress bars on stdout.
loggers = dict(interactive=False, text=True, csv=True, tensorboard=True)
seed = 0
device = "cpu"
