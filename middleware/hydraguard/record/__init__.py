"""Step ``record``: the audit log in the traffic-log format (the input of ``hydraguard replay``)."""
