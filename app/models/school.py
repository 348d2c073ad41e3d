from __future__ import annotations

import uuid
from datetime import time

from sqlalchemy import ARRAY, Integer, String, Time
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, TimestampMixin


class School(TimestampMixin, Base):
    """The tenant. Retry policy values are copied from the service defaults at creation."""

    __tablename__ = "schools"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    default_region: Mapped[str] = mapped_column(String(2))
    allowed_country_codes: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    # Both null: messages may go out at any hour.
    sending_window_start: Mapped[time | None] = mapped_column(Time)
    sending_window_end: Mapped[time | None] = mapped_column(Time)
    retry_base_delay_seconds: Mapped[int]
    retry_max_delay_seconds: Mapped[int]
    max_retry_age_seconds: Mapped[int | None]

    @property
    def sending_window(self) -> dict[str, time] | None:
        if self.sending_window_start is None or self.sending_window_end is None:
            return None
        return {"start": self.sending_window_start, "end": self.sending_window_end}

    @property
    def retry_policy(self) -> dict[str, int | None]:
        return {
            "base_delay_seconds": self.retry_base_delay_seconds,
            "max_delay_seconds": self.retry_max_delay_seconds,
            "max_retry_age_seconds": self.max_retry_age_seconds,
        }
