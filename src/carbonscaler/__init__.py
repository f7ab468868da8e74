"""CarbonScaler."""
