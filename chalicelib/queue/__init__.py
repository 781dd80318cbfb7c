"""Delivery of plan events from the store's outbox to RabbitMQ and to the queue handlers."""
