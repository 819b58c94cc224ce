# HEM+ recipe: as HEM (lr 0.02, the best of {0.01, 0.02, 0.05, 0.1} on validation data as
# for HEM; cosine restarted per experience), with per-class margins
# from the class counts of each experience's training data (dataset + replay buffer),
# set by ExperienceMarginsPlugin.
criterion = dict(type="HEMPlusLoss")
optimizer = dict(type="SGD", lr=0.02, momentum=0.9)
lr_scheduler = dict(type="CosineAnnealingLR")
plugins = [dict(type="ExperienceMarginsPlugin")]
