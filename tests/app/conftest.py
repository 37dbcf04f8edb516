"""The application as a whole: settings, the docs kept in step with them, the import layers,
the access log, secrets and URL credentials never shown, and the report of skipped test tiers."""
