"""The CNN image encoder (method §4): ResNet18 ensemble, augmentations, batches, splits, training, the
specificity screen and the embeddings (stages 02–04), and the classical profiles and mAP activity that
stages 02–03 compare the CNN with."""
