"""Translation from gene perturbation (image) embeddings to regulatory gene embeddings (method §7): input
features, models, LOTO evaluation and its nulls, metrics, statistics, the grid search, the transfer to
new genes of a second screen (stage 08)."""
