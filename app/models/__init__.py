"""All ORM tables, one file each, imported here so metadata is complete."""

from app.models.api_key import ApiKey
from app.models.attempt import Attempt
from app.models.audit_event import ADMIN_ACTOR, AuditAction, AuditEvent
from app.models.campaign import Campaign, CampaignStatus
from app.models.contact import Contact
from app.models.contact_list import ContactList
from app.models.event import Event
from app.models.opt_out import OptOut, OptOutSource
from app.models.provider_account import ProviderAccount
from app.models.receipt import StoredReceipt
from app.models.recipient import Recipient
from app.models.school import School
from app.models.webhook_endpoint import WebhookDelivery, WebhookEndpoint

__all__ = [
    "ADMIN_ACTOR",
    "ApiKey",
    "Attempt",
    "AuditAction",
    "AuditEvent",
    "Campaign",
    "CampaignStatus",
    "Contact",
    "ContactList",
    "Event",
    "OptOut",
    "OptOutSource",
    "ProviderAccount",
    "Recipient",
    "School",
    "StoredReceipt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
