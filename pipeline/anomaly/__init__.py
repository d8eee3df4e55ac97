"""Pure logic of the anomaly processor: latency sketches, baselines, rules, windows.

`processors/anomaly.py` is the processor; these modules hold its parts so each can be
read and tested on its own. Every piece of state they touch is plain JSON data (lists,
dicts with string keys, numbers), so a state table can persist it anywhere.
"""
