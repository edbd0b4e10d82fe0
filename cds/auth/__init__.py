"""Trusting CDS clients: verifying their JWTs, the trusted-clients file, the token-id store (each token id
used once), and signing client tokens (the development client and the toolkit)."""
