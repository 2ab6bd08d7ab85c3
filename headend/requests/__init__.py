"""On-demand requests over MQTT (read registers, read the relay), answered on responses/{id}."""
