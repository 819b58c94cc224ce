# The CE config with mmseg's online hard example mining on the decode head, as mmseg's own
# OHEM recipes do (`sampler=dict(type='OHEMPixelSampler', thresh=0.7, min_kept=100000)` on
# 512x1024 crops, i.e. ~19 % of a crop's pixels): per image, every pixel whose softmax
# probability of its label is below 0.7, and at least the 800 hardest of its 64x64 = 4096
# pixels (~20 %), carry CE; the others weigh 0. The auxiliary head keeps plain CE (as in
# mmseg, whose OHEM configs set the sampler of the decode head only).
_base_ = "./fcn-r18tiny_digitmosaic_ce.py"
model = dict(decode_head=dict(sampler=dict(type="OHEMPixelSampler", thresh=0.7, min_kept=800)))
