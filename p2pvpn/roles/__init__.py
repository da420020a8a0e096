"""Roles a node offers to the others of its network, announced in its NodeRecord (relay; exit later)."""
