"""The service's routes: the providers' webhooks (`app.webhooks`, at the paths of
`app.providers.callbacks`) and the /v1 API, assembled from each domain's endpoints."""

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from app.campaigns.endpoints import router as campaigns
from app.contact_lists.endpoints import router as contact_lists
from app.errors import responses
from app.events.endpoints import router as webhook_endpoints
from app.events.endpoints import streams as campaign_streams
from app.failed_reasons.endpoints import router as failed_reasons
from app.opt_outs.endpoints import router as opt_outs
from app.recipients.endpoints import router as recipients
from app.schools.dependencies import RATE_LIMITED
from app.schools.endpoints import router as schools
from app.webhooks.telnyx import router as telnyx_webhooks
from app.webhooks.twilio import router as twilio_webhooks

v1 = APIRouter(prefix="/v1")
v1.include_router(schools)
# Every operation of these takes a school's API key, so may be refused over its rate limit.
for domain in (contact_lists, campaigns, recipients, opt_outs, webhook_endpoints, campaign_streams):
    v1.include_router(domain, responses=responses(RATE_LIMITED))
v1.include_router(failed_reasons)

router = APIRouter()
# Routes are matched in order, one by one: the webhooks, by far the most frequent requests
# (a few per message sent), come first.
for routes in (twilio_webhooks, telnyx_webhooks, v1):
    router.include_router(routes)

# One tag per resource, in the order /docs shows them.
TAGS: list[dict[str, Any]] = [
    {"name": "schools", "description": "Admin (`ADMIN_TOKEN`): schools and their API keys."},
    {"name": "school", "description": "The caller's school: settings and provider account."},
    {
        "name": "api-keys",
        "description": "API keys: a school's own (its key), any school's (`ADMIN_TOKEN`); "
        "listed without their secret, revoked at once.",
    },
    {
        "name": "audit-events",
        "description": "Who changed what through the API, and when (the school's trail).",
    },
    {"name": "contact-lists", "description": "Contact lists and their imported contacts."},
    {"name": "campaigns", "description": "Campaigns and their lifecycle; message previews."},
    {
        "name": "recipients",
        "description": "A campaign's contacts: delivery status, failed reason, attempts, "
        "opt-out, resend, CSV export.",
    },
    {"name": "opt-outs", "description": "The school's opt-out list."},
    {
        "name": "webhook-endpoints",
        "description": "Where the school's events are posted (Standard Webhooks), and how "
        "each post went. See the README, Events.",
    },
    {"name": "failed-reasons", "description": "The failed-reason catalog (no key needed)."},
    {
        "name": "webhooks",
        "description": "Called by the SMS providers, signed by them (no API key): delivery "
        "receipts and inbound messages. See the README, Webhooks.",
    },
    {"name": "operations", "description": "Liveness, readiness and metrics."},
]


def operation_id(route: APIRoute) -> str:
    """A route's operationId when it names none: its function's name in camelCase."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)
