"""Domain-free plumbing: database, pagination, crypto, clock."""
