"""The tracker: announce, scrape, and the task API that maps URLs and digests to torrents."""
