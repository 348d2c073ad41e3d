"""Twilio: Messages API client, webhook signature and parsing, code table."""
