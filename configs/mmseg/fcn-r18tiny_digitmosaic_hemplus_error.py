# HEM+ with error-driven margins (docs/adaptive_margins.md): each class's HEM+ margin is scaled
# by its running training error relative to the mean, within [0.5, 2].
_base_ = "./fcn-r18tiny_digitmosaic_hemplus.py"
model = dict(
    decode_head=dict(loss_decode=dict(type="HEMPlusLoss", margin_rule=dict(type="error"))),
    auxiliary_head=dict(loss_decode=dict(type="HEMPlusLoss", margin_rule=dict(type="error"))),
)
