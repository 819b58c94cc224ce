# HEM recipe: HEM's gradient does not shrink as the errors vanish, so a smaller lr with a
# cosine schedule (restarted per experience). HEMPlusPlugin sets the margin from the number
# of samples trained on in each experience (dataset + replay buffer).
criterion = dict(type="HEMLoss")
optimizer = dict(type="SGD", lr=0.01, momentum=0.9)
lr_scheduler = dict(type="CosineAnnealingLR")
plugins = [dict(type="HEMPlusPlugin")]
