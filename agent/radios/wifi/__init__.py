"""Wi-Fi goods: UDP discovery (discovery.py), TCP 55AA links (link.py), AP mode (ap.py), the driver (radio.py)."""

from agent.radios.wifi.link import ConnectionState, WifiLink
from agent.radios.wifi.radio import WifiRadio

__all__ = ["ConnectionState", "WifiLink", "WifiRadio"]
