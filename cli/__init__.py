"""The `deft` command: one entry point (main.py), each role's commands in a module of its own."""
