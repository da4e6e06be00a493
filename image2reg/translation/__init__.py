"""Translation from gene perturbation (image) embeddings to regulatory gene embeddings (method §7)."""
