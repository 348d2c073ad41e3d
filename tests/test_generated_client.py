"""A Python client generated from the committed document (openapi/openapi.json) by
openapi-python-client builds without a warning, and the README's walk-through runs through
it against a live `campanile serve`: a school, a contact list imported from CSV, a preview,
a campaign launched, every contact's status and failed reason, the counts, the export.

This is also how an integrator gets a client (the README, "A Python client"):

    openapi-python-client generate --path openapi/openapi.json \\
        --config openapi/client.yaml --custom-template-path openapi/client-templates \\
        --meta none --output-path campanile_client

(openapi/client-templates corrects one template of the generator: see the file.)

The client is generated into the test's temporary folder, never committed. The generator
pins an older httpx than the service's, so scripts/bootstrap installs it in a venv of its
own, `.venv/codegen` (pyproject.toml, the `codegen` extra); what the generated code imports
(httpx, attrs, python-dateutil) is in the dev extra.
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.database import ROOT
from tests.support.live import live_server

GENERATOR = Path(sys.prefix) / "codegen" / "bin" / "openapi-python-client"
DOCUMENT = ROOT / "openapi" / "openapi.json"
CONFIG = ROOT / "openapi" / "client.yaml"
TEMPLATES = ROOT / "openapi" / "client-templates"

# The README's CSV: extra columns become merge fields; the last row is not a phone.
CSV = (
    "phone,first_name,last_name,room\n"
    "(201) 555-0100,Ana,Diaz,12\n"
    "+12015550101,Ben,Lee,14\n"
    "+12015550102,Cy,Ng,12\n"
    "+12015550104,Di,Oh,9\n"
    "+12015550109,Ed,Po,9\n"
    "not a phone,Fay,Qi,3\n"
)
BODY = "Hi {first_name}, room {room} opens at 9."
# What the simulator makes of each number (README, The simulator): status, failed reason.
FINAL = {
    "+12015550100": ("delivered", None),
    "+12015550101": ("delivered", None),  # fails once, delivered on the retry
    "+12015550102": ("failed", "unreachable_number"),
    "+12015550104": ("failed", "blocked"),
    "+12015550109": ("failed", "opted_out"),
}


def generate(into: Path) -> Any:
    """The client package generated from the committed document, imported."""
    assert GENERATOR.exists(), (
        f"{GENERATOR} is missing: run scripts/bootstrap (it installs openapi-python-client "
        "in a venv of its own)"
    )
    run = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(DOCUMENT),
            "--config",
            str(CONFIG),
            "--custom-template-path",
            str(TEMPLATES),
            "--meta",
            "none",
            "--output-path",
            str(into / "campanile_client"),
            "--fail-on-warning",
        ],
        # Its post-generation hooks run ruff, from its own venv.
        env={"PATH": f"{GENERATOR.parent}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(into))
    try:
        return importlib.import_module("campanile_client")
    finally:
        sys.path.remove(str(into))


def test_the_readme_walk_through_runs_through_a_generated_client(
    server_url: str, tmp_path: Path
) -> None:
    client_package = generate(tmp_path)
    # The generated modules, imported as an integrator would (they exist only now).
    from campanile_client import AuthenticatedClient, Client
    from campanile_client.api.campaigns import (
        create_campaign,
        get_campaign,
        launch_campaign,
        preview_message,
    )
    from campanile_client.api.contact_lists import create_contact_list, import_contacts
    from campanile_client.api.failed_reasons import list_failed_reasons
    from campanile_client.api.opt_outs import list_opt_outs
    from campanile_client.api.recipients import export_campaign_contacts, list_campaign_contacts
    from campanile_client.api.school import update_school
    from campanile_client.api.schools import create_school
    from campanile_client.models import (
        CampaignCreate,
        ContactListCreate,
        PreviewContact,
        PreviewContactFields,
        PreviewRequest,
        RetryPolicyPatch,
        SchoolCreate,
        SchoolSettings,
        Status,
    )
    from campanile_client.types import File

    assert client_package.__name__ == "campanile_client"
    with live_server(server_url, tmp_path) as server:
        # 1. A school; the answer carries its API key, shown this once.
        admin = AuthenticatedClient(base_url=server.base_url, token=server.admin_token)
        school = create_school.sync(
            client=admin,
            body=SchoolCreate(name="Lincoln High", timezone="America/Chicago", sending_window=None),
        )
        assert school is not None and school.timezone == "America/Chicago", school
        key = AuthenticatedClient(
            base_url=server.base_url, token=school.api_key, raise_on_unexpected_status=True
        )
        # Retries a second apart, not a minute: the contact that fails once is delivered
        # on its retry while the test waits.
        settings = update_school.sync(
            client=key,
            body=SchoolSettings(
                retry_policy=RetryPolicyPatch(base_delay_seconds=1, max_delay_seconds=1)
            ),
        )
        assert settings is not None and settings.retry_policy.max_delay_seconds == 1, settings

        # 2. A contact list, imported from CSV (extra columns become merge fields).
        contact_list = create_contact_list.sync(
            client=key, body=ContactListCreate(name="Grade 5 families")
        )
        assert contact_list is not None and contact_list.name == "Grade 5 families"
        imported = import_contacts.sync(
            contact_list.id, client=key, body=File(payload=io.BytesIO(CSV.encode()))
        )
        assert imported is not None and imported.imported == 5, imported
        assert [(r.row, r.phone, r.reason) for r in imported.rejected] == [
            (6, "not a phone", "not a phone number")
        ]

        # 3. A campaign: preview it, then launch it.
        fields = PreviewContactFields()
        fields["room"] = "12"
        preview = preview_message.sync(
            client=key,
            body=PreviewRequest(body=BODY, contact=PreviewContact(first_name="Ana", fields=fields)),
        )
        assert preview is not None
        assert (preview.text, preview.encoding, preview.characters, preview.segments) == (
            "Hi Ana, room 12 opens at 9.",
            "GSM-7",
            27,
            1,
        )
        campaign = create_campaign.sync(
            client=key,
            body=CampaignCreate(name="Room change", body=BODY, contact_list_id=contact_list.id),
        )
        assert campaign is not None and campaign.status == "draft", campaign
        launched = launch_campaign.sync(campaign.id, client=key)
        assert launched is not None and launched.status in ("active", "complete"), launched

        # 4. A few seconds later: every contact's status and failed reason.
        deadline = time.monotonic() + 60
        while True:
            page = list_campaign_contacts.sync(campaign.id, client=key)
            assert page is not None
            seen = {
                r.phone: (r.status, r.failed_reason.code if r.failed_reason else None)
                for r in page.items
            }
            if seen == FINAL:
                break
            assert time.monotonic() < deadline, f"{seen}\n{server.log_tail()}"
            time.sleep(0.5)
        labels = {r.phone: r.status_label for r in page.items}
        assert labels["+12015550100"] == "Delivered"
        assert labels["+12015550109"] == "Failed"
        assert page.next_cursor is None

        final = get_campaign.sync(campaign.id, client=key)
        assert final is not None and final.status == "complete", final
        assert (final.counts.total, final.counts.delivered, final.counts.failed) == (5, 2, 3)
        failed = list_campaign_contacts.sync(campaign.id, client=key, status=Status.FAILED)
        assert failed is not None
        assert sorted(r.phone for r in failed.items) == [
            "+12015550102",
            "+12015550104",
            "+12015550109",
        ]
        export = export_campaign_contacts.sync_detailed(campaign.id, client=key)
        assert export.status_code == 200
        assert export.headers["content-type"].startswith("text/csv")
        assert sum("+1201555010" in line for line in export.content.decode().splitlines()) == 5
        opted_out = list_opt_outs.sync(client=key)
        assert opted_out is not None
        assert [o.phone for o in opted_out.items] == ["+12015550109"]

        # The catalog needs no key.
        reasons = list_failed_reasons.sync(client=Client(base_url=server.base_url))
        assert reasons is not None and "opted_out" in {r.code for r in reasons}
