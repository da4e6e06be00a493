"""Profiles of nuclei and perturbations, whatever made them: classical features of the crops
(:mod:`~image2reg.profiling.features`), the linear baseline on them (:mod:`~image2reg.profiling.baseline`),
and the phenotypic activity (mAP, copairs) of CNN embeddings or classical profiles
(:mod:`~image2reg.profiling.activity`)."""
