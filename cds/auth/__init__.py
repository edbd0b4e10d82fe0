"""Trusting CDS clients: verifying their JWTs, the trusted-clients file, the jti replay store, and signing
client tokens (the development client and the toolkit)."""
