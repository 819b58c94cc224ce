# The CE config with HEM: one margin sqrt(2000 / 400 images) = 2.24, set by HEMMarginHook.
_base_ = "./fcn-r18tiny_digitmosaic_ce.py"
model = dict(
    decode_head=dict(loss_decode=dict(type="HEMLoss")),
    auxiliary_head=dict(loss_decode=dict(type="HEMLoss")),
)
custom_hooks = [dict(type="HEMMarginHook")]
