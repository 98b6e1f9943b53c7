"""bonedb's command line: parses options, calls `boneclf`, prints tables, JSON or progress bars."""
