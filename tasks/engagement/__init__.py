"""engagement job family."""
