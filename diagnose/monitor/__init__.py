"""Recording training diagnostics into the run store."""
