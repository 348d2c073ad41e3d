"""The audit trail: who changed what through the API, and when (README, Audit trail)."""
