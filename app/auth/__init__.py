"""Bearer tokens with scopes read < write < admin."""
