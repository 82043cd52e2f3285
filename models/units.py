"""Time units in milliseconds, the unit of every timestamp and duration in `models`.

>>> 7 * DAY_MS // MINUTE_MS
10080
"""

MINUTE_MS = 60_000
DAY_MS = 86_400_000
