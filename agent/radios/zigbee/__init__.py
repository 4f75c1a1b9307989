"""Zigbee goods through zigpy: coordinator by radio type, our manufacturer-specific cluster, chunked messages."""
