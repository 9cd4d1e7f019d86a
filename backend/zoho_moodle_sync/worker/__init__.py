"""The outbox worker: delivers stored changes to Moodle."""
