"""What crosses a boundary in rebadge: signed tokens, device messages, frames and MQTT topics. No I/O here."""
