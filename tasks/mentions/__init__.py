"""mentions job family."""
