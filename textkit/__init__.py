"""Text building blocks that the router and retrieval both use and neither owns.

Nothing here keeps process-wide mutable state: a `Segmenter` owns its dictionary, so one
component's words never change how another one cuts text.
"""
