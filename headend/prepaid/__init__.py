"""Prepaid policies beyond on/off: the consumption model, the run-out forecast, usage
statements, anomaly hints and when a disconnect may run (grace, quiet hours). Pure rules
here; storage and MQTT call them."""
