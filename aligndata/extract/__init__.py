"""Image/alt-text pairs from web pages: HTML files, WARC/ARC archives and fetched page URLs.

``html`` holds the extraction rules (documented in docs/extraction.md), ``warc`` a damage-tolerant WARC/ARC
reader, ``pages`` the row generators in the pipeline's raw-row format with their counters. The ``aligndata
extract`` Beam job is ``aligndata.pipeline.extract_job``; its sub-command is ``aligndata.commands.extract``.
"""
