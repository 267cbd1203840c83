"""gRPC adapters over the recserve libraries, the shared server runtime and the CLI."""
