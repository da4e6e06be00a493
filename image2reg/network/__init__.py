"""The gene side, computed: the PPI as a graph (gene universe, pruning scans), expression-derived costs and
prizes, the prize-collecting Steiner tree and gene-set enrichment (stage 05), and the regulatory gene embeddings
of the graph autoencoder (stage 06). The raw PPI, expression and gene sets are read by :mod:`image2reg.data`."""
