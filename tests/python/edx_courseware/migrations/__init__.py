"""The `courseware` app's migrations: edx-platform's tables as one initial migration, and the state-only change of
the history model's id to 64 bits that docs/migration.md ("The 2^31 boundary") tells an operator to add."""
