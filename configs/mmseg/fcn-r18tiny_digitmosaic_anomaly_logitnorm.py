# Anomaly segmentation on DigitMosaic (the digits 8 and 9 unknown) with LogitNorm (Wei et al.,
# 2022): the _ce config with LogitNormLoss on both heads (CE of the logits divided by tau times
# their L2 norm over the classes; tau 0.04, the paper's default). See the _ce config and
# docs/anomaly_segmentation.md.
#   python tools/train_seg.py configs/mmseg/fcn-r18tiny_digitmosaic_anomaly_logitnorm.py
_base_ = "./fcn-r18tiny_digitmosaic_anomaly_ce.py"
model = dict(
    decode_head=dict(
        loss_decode=dict(_delete_=True, type="LogitNormLoss", temperature=0.04, loss_weight=1.0)
    ),
    auxiliary_head=dict(
        loss_decode=dict(_delete_=True, type="LogitNormLoss", temperature=0.04, loss_weight=0.4)
    ),
)
