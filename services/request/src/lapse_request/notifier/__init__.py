"""The approver notifier: tells chat channels (Slack, Teams, any JSON receiver) about requests.

It runs as its own process (`lapse-notifier`), apart from the request API, with its own schema
`notify`: events are turned into delivery rows in one transaction, and a dispatcher posts them,
retrying with backoff, so a slow or dead webhook never holds up the workflow.
"""
