"""Image preprocessing: illumination, QC, segmentation, nucleus filters and crops, crop storage."""
