# The CE config with mmseg's FocalLoss on both heads (gamma 2, alpha 0.5: mmseg's defaults).
# mmseg 1.2.2's FocalLoss is sigmoid-only (`use_sigmoid=True` is asserted): one binary
# focal term per class and pixel; prediction stays the argmax over the 11 logits. It wants
# floats for gamma, alpha and loss_weight.
_base_ = "./fcn-r18tiny_digitmosaic_ce.py"
_focal = dict(
    _delete_=True,
    type="FocalLoss",
    use_sigmoid=True,
    gamma=2.0,
    alpha=0.5,
    loss_weight=1.0,
    loss_name="loss_focal",
)
model = dict(
    decode_head=dict(loss_decode=_focal),
    auxiliary_head=dict(loss_decode=dict(_focal, loss_weight=0.4)),
)
