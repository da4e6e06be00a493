"""Gene–gene interactome inference (stage 05): PPI, expression-derived costs and prizes, PCST."""
