"""images job family."""
