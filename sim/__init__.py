"""ptychoedge.sim"""
