"""Packaged presets: fleets of device tiers and the default experiment."""
