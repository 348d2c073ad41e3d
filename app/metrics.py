"""Prometheus metrics, served at /metrics."""

from prometheus_client import Counter, Histogram

messages_sent = Counter(
    "campanile_messages_sent_total",
    "Messages handed to a provider, by provider and outcome (accepted, soft, hard).",
    ["provider", "outcome"],
)
receipts = Counter(
    "campanile_receipts_total",
    "Delivery receipts received, by provider and result (applied, duplicate, unmatched...).",
    ["provider", "result"],
)
contacts_imported = Counter(
    "campanile_contacts_imported_total", "Contacts imported, by result.", ["result"]
)
claim_seconds = Histogram("campanile_claim_seconds", "Time to claim one batch of due recipients.")
