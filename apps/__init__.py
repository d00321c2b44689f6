"""ptychoedge.apps: programs that start and join the others (`ptychoedge sim`, the demo)."""
