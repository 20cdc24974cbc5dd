"""Apache Beam plumbing: sources, corpus statistics, fetching, shard writing, reports and the command line."""
