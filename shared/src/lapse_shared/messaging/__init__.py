"""RabbitMQ topology, the delay cascade, the confirming publisher and consumer helpers."""
