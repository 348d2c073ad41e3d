"""What tests share that is not a fixture: the database helpers (`database`), the API as
staff use it (`api`), the delivery engine's (`delivery`) and the webhooks' (`webhooks`).
Fixtures stay in the conftest modules, which import from here; tests never import from a
conftest."""
