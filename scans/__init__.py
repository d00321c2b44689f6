"""ptychoedge.scans"""
