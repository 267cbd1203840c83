"""Offline evaluation: ranking metrics and the harness that compares models with baselines."""
