"""The torch side, pure: read untrusted checkpoints, normalise them, validate, write and prove artifacts.

Nothing here touches the database or HTTP; the service layer and workers call these functions.
"""
