"""ptychoedge.iocs"""
