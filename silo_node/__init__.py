"""The hospital silo node: keeps the records, trains locally, releases only masked updates."""
