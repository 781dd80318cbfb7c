"""Lambda-style queue handlers and the local runner that feeds them from RabbitMQ."""
