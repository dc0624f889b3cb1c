"""Step 7: watch the response go by — status, usage, streamed text — without holding it back."""
