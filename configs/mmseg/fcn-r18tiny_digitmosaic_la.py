# The CE config with logit-adjusted CE (Menon et al., 2021; tau 1): the long-tail baseline of
# docs/adaptive_margins.md. LogitAdjustHook sets the priors from the training set's pixel counts.
_base_ = "./fcn-r18tiny_digitmosaic_ce.py"
model = dict(
    decode_head=dict(loss_decode=dict(_delete_=True, type="LogitAdjustedLoss", loss_weight=1.0)),
    auxiliary_head=dict(loss_decode=dict(_delete_=True, type="LogitAdjustedLoss", loss_weight=0.4)),
)
custom_hooks = [dict(type="LogitAdjustHook")]
