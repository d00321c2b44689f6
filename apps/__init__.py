"""ptychoedge.apps: programs that start and join the other parts (the end-to-end demo)."""
