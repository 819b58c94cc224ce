# The CE config with mmseg's DiceLoss (softmax over the classes, ignore_index 255): a
# baseline for the loss benchmark.
_base_ = "./fcn-r18tiny_digitmosaic_ce.py"
_dice = dict(
    _delete_=True,
    type="DiceLoss",
    use_sigmoid=False,
    activate=True,
    naive_dice=False,
    loss_weight=1.0,
    loss_name="loss_dice",
)
model = dict(
    decode_head=dict(loss_decode=_dice),
    auxiliary_head=dict(loss_decode=dict(_dice, loss_weight=0.4)),
)
