"""Files: MRC volumes written atomically, and the output folder (its guard and its lock)."""
