"""Look inside, check and export WebDataset shard sets (`aligndata inspect ...`)."""
