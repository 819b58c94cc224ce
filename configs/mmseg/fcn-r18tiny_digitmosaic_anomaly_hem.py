# Anomaly segmentation on DigitMosaic (the digits 8 and 9 unknown, labelled 254 in the val
# mosaics) with HEM: the _ce config with HEMLoss on both heads, its margin
# sqrt(2000 / images) set by HEMMarginHook. See the _ce config and docs/mmseg.md.
#   python tools/train_seg.py configs/mmseg/fcn-r18tiny_digitmosaic_anomaly_hem.py
_base_ = "./fcn-r18tiny_digitmosaic_anomaly_ce.py"
model = dict(
    decode_head=dict(loss_decode=dict(type="HEMLoss")),
    auxiliary_head=dict(loss_decode=dict(type="HEMLoss")),
)
custom_hooks = [dict(type="HEMMarginHook")]
