"""Background loops: the delivery worker."""
