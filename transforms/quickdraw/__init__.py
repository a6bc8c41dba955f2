"""QuickDraw: the Example features the ingest job writes, and their preprocessing_fn."""
