"""The delivery worker's hand-written SQL and the row shapes it reads: its one home.

Claim and record handle hundreds of recipients a cycle, and the receipt applier hundreds of
receipts a batch, so they read plain rows with the columns they need (`RecipientRow`, not
ORM entities), always by column name, and write each kind of change back in one statement
over arrays (`unnest`): the ORM's identity map and unit of work cost several times the SQL
itself at that size. The rare paths (opt-outs, completion, loading a school that changed)
keep the ORM, beside the code that runs them.

Each column list is written once: a row shape's fields name its columns (and their types,
for the writes). Everything is read here as `sql.NAME`; the modules only keep each part a
readable size:

- `shapes`: the row shapes (`RecipientRow`, `Previous`, `Claimed`, `NewAttempt`...);
- `reads`: the claim's, the record's and the admission's statements;
- `writes`: their writes, one statement a batch;
- `receipts`: the inbox's INSERT and the receipt applier's statements;
- `overdue`: the reconciliation's claim and its overdue rule's statements.
"""

from app.delivery.sql.overdue import (
    CLAIM_DUE,
    OVERDUE_ATTEMPTS,
    SettledAttempt,
    write_overdue,
)
from app.delivery.sql.reads import (
    ADMISSION_LOCKS,
    BATCH,
    BATCH_AND_WAITING,
    CLAIM,
    LOCK_RATED,
    SCHOOLS,
    STILL_WAITING,
    TAKEN,
    record,
    recorded_messages,
)
from app.delivery.sql.receipts import (
    DUE_RECEIPTS,
    KEEP_RECEIPT,
    LOCK_APPLIED,
    NAMED,
    RECEIPT_TARGETS,
    attempt_of,
    write_applied,
)
from app.delivery.sql.shapes import (
    RECIPIENT_COLUMNS,
    AnyRow,
    AttemptRow,
    Claimed,
    NewAttempt,
    Previous,
    RecipientRow,
    RecoveredAttempt,
    SendSlots,
)
from app.delivery.sql.writes import write_claim, write_record

__all__ = [
    "ADMISSION_LOCKS",
    "BATCH",
    "BATCH_AND_WAITING",
    "CLAIM",
    "CLAIM_DUE",
    "DUE_RECEIPTS",
    "KEEP_RECEIPT",
    "LOCK_APPLIED",
    "LOCK_RATED",
    "NAMED",
    "OVERDUE_ATTEMPTS",
    "RECEIPT_TARGETS",
    "RECIPIENT_COLUMNS",
    "SCHOOLS",
    "STILL_WAITING",
    "TAKEN",
    "AnyRow",
    "AttemptRow",
    "Claimed",
    "NewAttempt",
    "Previous",
    "RecipientRow",
    "RecoveredAttempt",
    "SendSlots",
    "SettledAttempt",
    "attempt_of",
    "record",
    "recorded_messages",
    "write_applied",
    "write_claim",
    "write_overdue",
    "write_record",
]
