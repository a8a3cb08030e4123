"""The domain of campaign-engine: models, market model, ledger, forecasts and the decision engine.

Nothing in this package imports Celery; the worker and beat packages are thin shells around it.
"""
