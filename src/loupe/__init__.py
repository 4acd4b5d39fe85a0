"""loupe: end-to-end tracing for an order pipeline."""
