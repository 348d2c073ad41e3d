"""Prometheus metrics, served at /metrics."""

from prometheus_client import Counter, Gauge, Histogram

messages_sent = Counter(
    "campanile_messages_sent_total",
    "Messages handed to a provider, by provider and outcome (accepted, soft, hard).",
    ["provider", "outcome"],
)
receipts = Counter(
    "campanile_receipts_total",
    "Delivery receipts received, by provider and result (stored, duplicate).",
    ["provider", "result"],
)
receipts_applied = Counter(
    "campanile_receipts_applied_total",
    "Stored receipts applied to their message, by provider and result (applied, stale).",
    ["provider", "result"],
)
receipts_unmatched = Gauge(
    "campanile_receipts_unmatched",
    "Receipts still waiting for their message long after arriving (set by the worker sweep).",
)
webhooks_refused = Counter(
    "campanile_webhooks_refused_total",
    "Provider webhooks refused, by provider and why (signature: 403, malformed: 400).",
    ["provider", "why"],
)
contacts_imported = Counter(
    "campanile_contacts_imported_total", "Contacts imported, by result.", ["result"]
)
claim_seconds = Histogram("campanile_claim_seconds", "Time to claim one batch of due recipients.")
