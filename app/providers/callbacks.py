"""The paths providers call us on, in one place: the status callback set on every message
we send (`Registry.callback_url`), and the webhooks a school configures at its provider.
`app.webhooks` serves them."""

TWILIO_STATUS = "/v1/webhooks/twilio/status"
TWILIO_INBOUND = "/v1/webhooks/twilio/inbound"
TELNYX = "/v1/webhooks/telnyx"  # receipts and inbound messages alike

# Each provider's status callback, by provider name.
STATUS_CALLBACKS = {"twilio": TWILIO_STATUS, "telnyx": TELNYX}
