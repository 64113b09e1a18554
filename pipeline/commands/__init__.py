"""The body of every command, as importable functions returning exit codes.

This is the only place where ``pipeline.errors`` become one-line messages on
stderr and non-zero exit codes (see ``cli.run_command``).
"""
