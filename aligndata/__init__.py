"""aligndata: ALIGN-style curation of web image/alt-text data into WebDataset shards, and a dual-encoder trainer."""

__version__ = "0.1.0"
# The one format of our log lines: the CLI, a command family run alone, and the warm workers' own stderr
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
