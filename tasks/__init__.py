"""Job families: one package each, thin Celery entry points over plain-Python logic."""
