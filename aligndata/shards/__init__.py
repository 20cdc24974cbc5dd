"""WebDataset shards in our contract: the typed metadata, the Beam-free writer, the hardened reader, shard specs."""
