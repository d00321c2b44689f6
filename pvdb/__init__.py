"""The PV contract: every PV, and what the processes say to each other, written once."""
