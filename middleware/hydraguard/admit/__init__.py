"""Step 5: one all-or-nothing check-and-reserve over every limit that applies."""
