# HEM+ variant of mmseg's shipped fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.py: only the loss, the custom import and the hook
# change. Needs the dataset on disk (mmseg's data layout) and GPUs, as the original recipe.
#   tools/dist_train_seg.sh configs/mmseg/real/fcn_r50-d8_4xb2-80k_cityscapes-512x1024_hemplus.py 4
_base_ = ["mmseg::fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.py"]
custom_imports = dict(imports=["hem_plugins.mmseg"], allow_failed_imports=False)
model = dict(
    decode_head=dict(loss_decode=dict(type="HEMPlusLoss")),
    auxiliary_head=dict(loss_decode=dict(type="HEMPlusLoss")),
)
# Counts the pixels per class of the training set before training (cached in the work dir).
custom_hooks = [dict(type="HEMMarginHook")]
