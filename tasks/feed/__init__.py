"""feed job family."""
