"""Image/alt-text pairs from web pages: HTML files, WARC/ARC archives and fetched page URLs.

``html`` holds the extraction rules (documented in docs/extraction.md), ``warc`` a damage-tolerant WARC/ARC
reader, ``sources`` the row generators in the pipeline's raw-row format with their counters, ``pipeline`` and
``commands`` the ``aligndata extract`` job and sub-command.
"""
