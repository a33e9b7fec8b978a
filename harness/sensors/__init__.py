"""Sensors: adapters that yield one product's detections, normalised."""
