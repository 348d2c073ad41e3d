"""The service's routes: the providers' webhooks (`app.webhooks`, at the paths of
`app.providers.callbacks`) and the /v1 API, assembled from each domain's endpoints."""

from fastapi import APIRouter

from app.campaigns.endpoints import router as campaigns
from app.contact_lists.endpoints import router as contact_lists
from app.failed_reasons.endpoints import router as failed_reasons
from app.opt_outs.endpoints import router as opt_outs
from app.recipients.endpoints import router as recipients
from app.schools.endpoints import router as schools
from app.webhooks.telnyx import router as telnyx_webhooks
from app.webhooks.twilio import router as twilio_webhooks

v1 = APIRouter(prefix="/v1")
for domain in (schools, contact_lists, campaigns, recipients, opt_outs, failed_reasons):
    v1.include_router(domain)

router = APIRouter()
# Routes are matched in order, one by one: the webhooks, by far the most frequent requests
# (a few per message sent), come first.
for routes in (twilio_webhooks, telnyx_webhooks, v1):
    router.include_router(routes)
