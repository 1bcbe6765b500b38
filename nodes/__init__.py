"""Code that runs inside a hospital and is the only code that sees rows."""
