"""Training and evaluation of the LGG segmentation model.

Entry points: ``python -m training.train`` and ``python -m training.evaluate``. Nothing outside
training/ imports this package (imports point training -> {models, data}).
"""
