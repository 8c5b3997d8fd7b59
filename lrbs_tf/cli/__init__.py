"""The command-line tools: flag parsing, printing and exit statuses (:mod:`.common`), one module
per command. ``experiments/*.py`` and ``tools/*.py`` call these.

May import: everything.
"""
