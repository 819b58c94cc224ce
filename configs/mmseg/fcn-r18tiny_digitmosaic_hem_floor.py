# The HEM config with divisor="floor": max(kept errors, f * valid pixels), f the default
# hem_plugins.functional.DIVISOR_FLOOR (docs/divisor.md; benchmark task `divisor`).
_base_ = "./fcn-r18tiny_digitmosaic_hem.py"
model = dict(
    decode_head=dict(loss_decode=dict(divisor="floor")),
    auxiliary_head=dict(loss_decode=dict(divisor="floor")),
)
