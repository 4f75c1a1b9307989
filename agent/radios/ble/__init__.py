"""BLE goods through bleak: discovery by our service UUID, connections through bleak-retry-connector, fragments."""
