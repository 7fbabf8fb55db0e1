"""LoLa-DEFT coordinator (edge server side) and the `deft` command line."""
