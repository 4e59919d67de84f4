"""Real Triton Inference Server: launcher, python-backend shim, client adapter."""
