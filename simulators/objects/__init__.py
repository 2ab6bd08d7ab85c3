"""The simulated meter's COSEM object model, shared by every meter."""
