"""The CNN image encoder (method §4): ResNet18 ensemble, augmentations, splits and training."""
