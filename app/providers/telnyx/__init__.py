"""Telnyx: Messaging API v2 client, webhook signature and parsing, code table."""
