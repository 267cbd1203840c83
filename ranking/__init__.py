"""Second stage: a PyTorch model scoring (user, candidate) pairs (no gRPC here)."""
