"""Reference firmware for finished goods, plugged in where the real radio libraries expect hardware."""
