# The CE config with HEM+: a margin per class from the pixel frequencies of the training set,
# counted by HEMMarginHook before training (cached in the work dir).
_base_ = "./fcn-r18tiny_digitmosaic_ce.py"
model = dict(
    decode_head=dict(loss_decode=dict(type="HEMPlusLoss")),
    auxiliary_head=dict(loss_decode=dict(type="HEMPlusLoss")),
)
custom_hooks = [dict(type="HEMMarginHook")]
