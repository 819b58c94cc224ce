# HEM+ variant of mmseg's shipped segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py: only the loss, the custom import and the hook
# change. Needs the dataset on disk (mmseg's data layout) and GPUs, as the original recipe.
#   tools/dist_train_seg.sh configs/mmseg/real/segformer_mit-b0_8xb2-160k_ade20k-512x512_hemplus.py 8
_base_ = ["mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"]
custom_imports = dict(imports=["hem_plugins.mmseg"], allow_failed_imports=False)
model = dict(
    decode_head=dict(loss_decode=dict(type="HEMPlusLoss")),
)
# Counts the pixels per class of the training set before training (cached in the work dir).
custom_hooks = [dict(type="HEMMarginHook")]
