"""Step 3: read the request in its route's dialect (prompt, max_tokens, extraction parameters)."""
