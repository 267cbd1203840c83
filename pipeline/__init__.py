"""Offline side: data → trained models → a versioned artifact directory."""
