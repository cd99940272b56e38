"""Search: posts indexed from PostgreSQL into PostgreSQL full-text or Typesense, and the web tier's query.

``from tasks.search import query``; see tasks/search/searching.py.
"""
from tasks.search.searching import SearchPage, query

__all__ = ["SearchPage", "query"]
