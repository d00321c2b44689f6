"""ptychoedge.pvdb"""
