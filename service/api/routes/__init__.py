"""The HTTP routes, one module per resource: files (/init), stats, catalogue, health."""
