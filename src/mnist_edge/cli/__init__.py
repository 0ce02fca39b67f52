"""The `mnist-edge` command: `commands` parses, calls one function and prints; `options` holds the shared options,
`checks` the numeric flags' range check, `runtime` the group, the error lines, exit statuses and `main`.

Nothing is imported here: the entry point imports `runtime` alone, so that a broken dependency, imported by
`commands`, is caught and named by `main` instead of ending in a traceback.
"""
