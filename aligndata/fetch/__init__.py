"""Fetching over HTTP(S): client, wire protocol, address guard, politeness and the resume cache. No Beam."""
