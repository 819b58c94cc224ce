# The CE config with mmseg's sigmoid focal loss on both heads (gamma 2, alpha 0.5: mmseg's
# defaults). mmseg 1.2.2's FocalLoss is sigmoid-only (`use_sigmoid=True` is asserted; one
# binary focal term per class and pixel; prediction stays the argmax over the 11 logits) and
# wants floats for gamma, alpha and loss_weight. Its CPU path breaks on integer label maps
# (open-mmlab/mmsegmentation#3249), so the heads use `OneHotFocalLoss`
# (hem_plugins/benchmark/mmseg/focal.py): mmseg's FocalLoss, handed one-hot targets.
_base_ = "./fcn-r18tiny_digitmosaic_ce.py"
_focal = dict(
    _delete_=True,
    type="OneHotFocalLoss",
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
