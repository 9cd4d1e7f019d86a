"""The one job queue: every kind of background work (Moodle delivery, webhook completion,
periodic upkeep) is a row claimed with a lease, retried with backoff, and settled the same way.
`queue` is the mechanism, `operator` the view and actions an operator has on it."""
