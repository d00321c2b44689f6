"""ptychoedge.inference"""
