"""Service settings, read from the environment (and an optional `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from platformdirs import user_data_dir
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Unset: run an embedded PostgreSQL server of our own (see app.kit.embedded).
    database_url: str | None = None
    # Where the embedded server keeps its data, the generated secret key and admin token.
    data_dir: Path = Field(default_factory=lambda: Path(user_data_dir("campanile")))
    public_base_url: str = "http://127.0.0.1:8000"
    # Unset: embedded mode generates one and keeps it in data_dir; otherwise admin is off.
    admin_token: str | None = None
    # Fernet key (urlsafe base64, 32 bytes) for provider credentials at rest.
    secret_key: str | None = None

    worker_poll_seconds: float = 1.0
    worker_batch_size: int = 200
    worker_concurrency: int = 50
    # A send unanswered this long gives its place to the next (`app.delivery.gate`). Half
    # a second: a send hanging until its timeout in a brownout holds a place that long,
    # so with a share S of sends hanging each send costs S x this of place time on top of
    # its own (tens of ms): at 5%, 1 s would be about as much again as a clean send's.
    worker_straggling_seconds: float = Field(default=0.5, gt=0)
    worker_lease_seconds: int = 300
    # How often an idle receipt applier looks for stored receipts to apply.
    receipts_poll_seconds: float = 0.2

    # How often an idle webhook deliverer looks for new events and due retries (README,
    # Events): about the most a change waits before it is posted.
    events_poll_seconds: float = Field(default=0.2, gt=0)

    # Webhook endpoints may be http, and point at private, loopback and link-local
    # addresses (README, Events): for development and tests only.
    events_allow_private_urls: bool = False
    # Events are kept this long, then pruned (README, Events).
    events_retention_days: int = Field(default=7, gt=0)

    # Receipts that never come (README, Webhooks): a message at the provider with no final receipt
    # for this long is looked up by its message id, and again every as long after;
    reconcile_after_seconds: int = Field(default=43_200, gt=0)
    # and one the carrier accepted (`sent`) is taken as delivered, unconfirmed, this long
    # after its hand-over.
    unconfirmed_after_seconds: int = Field(default=259_200, gt=0)

    # Service-wide retry defaults (a school may override them).
    retry_base_delay_seconds: int = 60
    retry_max_delay_seconds: int = 3600

    # Request limits.
    max_body_bytes: int = 16 * 1024 * 1024
    max_import_rows: int = 100_000
    # Requests each API key may make a minute, in each API process, with bursts of as many
    # (README, Rate limits); 0 turns the limit off.
    rate_limit_per_minute: int = Field(default=600, ge=0)
    # Requests each school may have in progress at once, over all its keys, in each API
    # process (README, Rate limits); 0 turns the cap off. Eight: a console page's few
    # requests at once, or a script's small thread pool, stay under it, while a school's
    # burst holds at most 8 of a process's 20 database connections and its event loop's turns.
    rate_limit_in_flight: int = Field(default=8, ge=0)

    # Audit events older than this are deleted by the worker (README, Audit trail); 0 keeps
    # them as long as their school.
    audit_retention_days: int = Field(default=365, ge=0)

    # Operator overrides of the provider code tables (JSON files, same shape as shipped).
    twilio_code_table: Path | None = None
    telnyx_code_table: Path | None = None

    log_level: str = "INFO"

    @property
    def embedded(self) -> bool:
        return self.database_url is None


@lru_cache
def get_settings() -> Settings:
    return Settings()
