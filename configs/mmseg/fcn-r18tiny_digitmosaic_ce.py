# Tiny FCN on DigitMosaic with cross-entropy (the baseline). Trains on the CPU in minutes:
#   python tools/train_seg.py configs/mmseg/fcn-r18tiny_digitmosaic_ce.py
_base_ = ["./_base_/fcn_r18_tiny.py", "./_base_/digit_mosaic.py", "./_base_/schedule_cpu.py"]
