"""The `bratsseg` command line."""
