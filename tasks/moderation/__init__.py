"""Automated content moderation (seed 003's content_moderation): score, hide, review."""
