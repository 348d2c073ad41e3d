FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 campanile

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
# Editable, so `campanile migrate` finds alembic.ini and migrations/ beside the package.
RUN pip install -e .

USER campanile
EXPOSE 8000
CMD ["campanile", "serve", "--host", "0.0.0.0"]
