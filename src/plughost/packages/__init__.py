"""What a plugin package is, independent of any host: safe extraction, packing, signing."""
