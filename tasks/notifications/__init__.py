"""notifications job family."""
