"""Campanile: campaign SMS delivery for schools."""
