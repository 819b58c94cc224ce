# The HEM config with divisor="rows": the kept errors' sum over the number of valid pixels
# instead of over the kept errors (docs/divisor.md; benchmark task `divisor`).
_base_ = "./fcn-r18tiny_digitmosaic_hem.py"
model = dict(
    decode_head=dict(loss_decode=dict(divisor="rows")),
    auxiliary_head=dict(loss_decode=dict(divisor="rows")),
)
