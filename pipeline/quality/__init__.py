"""Quality monitoring support: the local sentence-embedding model and text fingerprints."""
