"""The life cycle every model shares.

The Lightning mixin, checkpoint state, random state, scorer fitting, data checks, precision and
distributed helpers.
"""
