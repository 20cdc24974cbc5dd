"""aligndata: ALIGN-style curation of web image/alt-text data into WebDataset shards, and a dual-encoder trainer."""

__version__ = "0.1.0"
