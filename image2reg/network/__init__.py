"""The gene side: the interactome (stage 05: PPI, expression-derived costs and prizes, PCST, enrichment) and
the regulatory gene embeddings of the graph autoencoder (stage 06)."""
