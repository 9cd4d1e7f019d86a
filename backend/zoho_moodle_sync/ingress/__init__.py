"""Ingress: the one orchestrator of inbound requests and the transaction boundary of each.

What arrived is stored and committed first (`events`), so nothing that reached us is lost; then
`/v1/sync` requests (`requests`) run their records through parser → mapper → service in one
transaction (`pipeline`), and webhooks (`webhooks`) are checked and accepted with the job that
completes them. Repeats and Idempotency-Keys are decided here too (`idempotency`). The API layer
only translates HTTP to these calls and their `Answer` back.
"""
