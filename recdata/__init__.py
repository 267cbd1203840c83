"""Data layer: the dataset contract, synthetic data generation and item/sequence helpers."""
