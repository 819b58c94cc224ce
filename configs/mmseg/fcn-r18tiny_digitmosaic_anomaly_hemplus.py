# Anomaly segmentation on DigitMosaic (the digits 8 and 9 unknown) with HEM+: the _ce config
# with HEMPlusLoss on both heads, a margin per known class from the pixel frequencies of the
# training images, counted by HEMMarginHook. See the _ce config and docs/mmseg.md.
#   python tools/train_seg.py configs/mmseg/fcn-r18tiny_digitmosaic_anomaly_hemplus.py
_base_ = "./fcn-r18tiny_digitmosaic_anomaly_ce.py"
model = dict(
    decode_head=dict(loss_decode=dict(type="HEMPlusLoss")),
    auxiliary_head=dict(loss_decode=dict(type="HEMPlusLoss")),
)
custom_hooks = [dict(type="HEMMarginHook")]
