# HEM+ with scheduled margins (docs/adaptive_margins.md): the margins grow linearly from 0.1x
# to the HEM+ margins over the first half of the schedule (1000 of the 2000 iterations).
_base_ = "./fcn-r18tiny_digitmosaic_hemplus.py"
_rule = dict(type="scheduled", warmup_steps=1000, start_factor=0.1)
model = dict(
    decode_head=dict(loss_decode=dict(type="HEMPlusLoss", margin_rule=_rule)),
    auxiliary_head=dict(loss_decode=dict(type="HEMPlusLoss", margin_rule=_rule)),
)
