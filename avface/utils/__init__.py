"""Small shared utilities (Ray start-up, atomic file writes, progress)."""
