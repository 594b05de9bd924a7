"""The web layer: a thin FastAPI application over the engine (``service.core``).

Request → :mod:`.models` (types, unknown fields) → :mod:`.resolution` (engine resolve,
limits, plan) → :mod:`.routes` (stream, stats, catalogue) ; errors → :mod:`.problems`.
"""
