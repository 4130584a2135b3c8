"""What the read-only commands compute: validate, corners, inspect (diff), repro, report."""
