"""The HTTP service: the Flask app factory, endpoints, the request guard, OpenAPI, metrics and serving."""
