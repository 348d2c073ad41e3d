"""Inbound HTTP from the providers, above their adapters: Twilio's status callbacks and
inbound messages (`twilio`, with its fast path `twilio_fast_path`), Telnyx's webhook
(`telnyx`), and what they share (`common`). Their paths: `app.providers.callbacks`."""
