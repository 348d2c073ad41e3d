"""The /v1 router, assembled from each domain's endpoints and the providers' webhooks."""

from fastapi import APIRouter

from app.campaigns.endpoints import router as campaigns
from app.contact_lists.endpoints import router as contact_lists
from app.failed_reasons.endpoints import router as failed_reasons
from app.opt_outs.endpoints import router as opt_outs
from app.providers.telnyx.webhooks import router as telnyx_webhooks
from app.providers.twilio.webhooks import router as twilio_webhooks
from app.recipients.endpoints import router as recipients
from app.schools.endpoints import router as schools

router = APIRouter(prefix="/v1")
# Routes are matched in order, one by one: the webhooks, by far the most frequent requests
# (a few per message sent), come first.
for domain in (
    twilio_webhooks,
    telnyx_webhooks,
    schools,
    contact_lists,
    campaigns,
    recipients,
    opt_outs,
    failed_reasons,
):
    router.include_router(domain)
