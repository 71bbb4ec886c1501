"""Fetching over HTTP: one hardened client (deadlines, size caps, address
checks on every hop), robots.txt, and polite page fetching for --full_text."""
