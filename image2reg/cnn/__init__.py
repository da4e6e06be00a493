"""The CNN image encoder (method §4): ResNet18 ensemble, augmentations, batches, splits, training, the
specificity screen and the embeddings (stages 02–04). The classical profiles and the mAP activity they are
compared with live in :mod:`image2reg.profiling`."""
