"""Candidate generation: two-tower model, FAISS index, filtered top-K search (no gRPC here)."""
