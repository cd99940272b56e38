"""Multi-host tests: several simulated hosts on one machine (see netns.py)."""
